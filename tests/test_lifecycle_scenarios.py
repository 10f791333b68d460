"""Whole lives of complaints, end to end: every email the worker sends over ten weeks, and when.

A complaint is delivered to the mailbox at its receipt instant and the real worker is run
(`once`) at receipt, four times every day (weekends and bank holidays included), and also
exactly at, and one second before, every instant at which something is expected. Each email's
`X-Complaints-Worker-Purpose`, `Date:` and recipients are compared with a list computed here
independently of the worker: by hand from the rule files (see the comments), with a hard-coded
list of English bank holidays and plain weekday checks. The worker's calendar engine and
planner are never used to produce an expectation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for, write_config
from worker.adapters.db import upgrade
from worker.demo_mail import customer_mail
from worker.embedded import EmbeddedSmtpServer, ReceivedMail, deliver_many

LONDON = ZoneInfo("Europe/London")

# English bank holidays (gov.uk) in and around the windows used below.
BANK_HOLIDAYS = frozenset({
    date(2026, 1, 1), date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 4), date(2026, 5, 25),
    date(2026, 8, 31), date(2026, 12, 25), date(2026, 12, 28),
    date(2027, 1, 1), date(2027, 3, 26), date(2027, 3, 29), date(2027, 5, 3), date(2027, 5, 31),
})

CUSTOMER = "pat.customer@example.org"
DESK = "desk.example"
TEAM = f"team@{DESK}"

# Stage owner roles, stage 1 then stage 2, as in each rule file's [[stages]].
STAGE_ROLES = {
    "claranet-soho": ("team-leader", "manager"),
    "halo-tech-group": ("department-manager", "senior-manager"),
    "infinity-group": ("operations-director", "managing-director"),
    "all-communications": ("manager", "managing-director"),
    "communications-ombudsman": ("area-leader", "senior-leader"),
}

# The day's passes: every day of the life, weekends and bank holidays included (local time).
DAILY_RUNS = ("09:00", "12:00", "16:00", "17:00")
SECOND = timedelta(seconds=1)

Sent = tuple[str, datetime, tuple[str, ...]]  # purpose, Date (UTC), recipients


# --------------------------------------------------------------------------- independent calendar

def local(day: date, hhmm: str) -> datetime:
    """A London wall-clock time on `day`, as a UTC instant."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return datetime.combine(day, time(hours, minutes), LONDON).astimezone(UTC)


def local_date(instant: datetime) -> date:
    return instant.astimezone(LONDON).date()


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in BANK_HOLIDAYS


def working_days(first: date, last: date) -> list[date]:
    """Working days from `first` to `last`, both included."""
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [d for d in days if is_working_day(d)]


def nth_working_day_after(day: date, n: int) -> date:
    found = 0
    while found < n:
        day += timedelta(days=1)
        found += is_working_day(day)
    return day


def weeks_later(instant: datetime, weeks: int) -> datetime:
    """The same London wall-clock time, 7 * weeks calendar days later (DST-safe)."""
    wall = instant.astimezone(LONDON)
    return datetime.combine(wall.date() + timedelta(weeks=weeks), wall.time(), LONDON).astimezone(UTC)


def adr_threshold(first_raised: datetime) -> datetime:
    """Ofcom GC C4: 8 weeks if first raised (UK local date) before 8 April 2026, else 6."""
    return weeks_later(first_raised, 8 if local_date(first_raised) < date(2026, 4, 8) else 6)


def describe(when: datetime) -> str:
    wall = when.astimezone(LONDON)
    return f"{wall:%a %Y-%m-%d %H:%M:%S %Z} ({when:%Y-%m-%dT%H:%M:%SZ})"


def role(provider: str, stage: int) -> tuple[str, ...]:
    return (f"{STAGE_ROLES[provider][stage - 1]}@{DESK}",)


def escalated_to(provider: str) -> tuple[str, ...]:
    """A missed stage-1 deadline: alerted to the stage-1 owner, escalated to stage 2's."""
    return role(provider, 1) + role(provider, 2)


# --------------------------------------------------------------------------- the mail room

class Mailroom:
    """One provider's mailbox with notify and role addresses, driven by the real worker."""

    def __init__(self, tmp_path: Path, pymap, smtp: EmbeddedSmtpServer, provider: str) -> None:
        self.pymap, self.smtp, self.provider = pymap, smtp, provider
        self.address = PROVIDER_ADDRESSES[provider]
        self.staff = f"staff@{self.address.rpartition('@')[2]}"
        roles = {name: role(provider, n)[0] for n, name in enumerate(STAGE_ROLES[provider], 1)}
        url = f"sqlite:///{tmp_path / 'worker.db'}"
        path = write_config(tmp_path / "config.toml", db_url=url, imap_port=pymap.port,
                            smtp_port=smtp.port,
                            mailboxes=[mailbox_for(provider, extra={"notify": [TEAM]})])
        # tests/harness.py writes a dict value as a quoted string, so `roles` (a TOML table) is
        # appended here: the mailbox is the last table in the file.
        table = ", ".join(f'"{name}" = ["{address}"]' for name, address in roles.items())
        with path.open("a", encoding="utf-8") as config:
            config.write(f"roles = {{ {table} }}\n")
        upgrade(url)
        self.worker = Worker(path)
        assert dict(self.worker.app.config.mailboxes[0].roles) == {
            name: (address,) for name, address in roles.items()}

    def deliver(self, raw: bytes, at: datetime) -> None:
        deliver_many("127.0.0.1", self.pymap.port, self.address, PASSWORD, [(raw, at)])

    def complaint(self, at: datetime) -> None:
        self.deliver(customer_mail(
            sender=CUSTOMER, name="Pat Customer", to=self.address, subject="Broadband keeps dropping",
            at=at, text="Hello,\n\nMy broadband has dropped every evening for two weeks and nobody "
                        "has fixed it.\n\nPat Customer\n07700 900123\n"), at)

    def notification(self) -> ReceivedMail:
        return next(m for m in self.smtp.received
                    if m.message["X-Complaints-Worker-Purpose"] == "staff-notification")

    def reference(self) -> str:
        return str(self.notification().message["X-Complaints-Worker-Case"])

    def staff_reply(self, text: str, at: datetime) -> None:
        """A staff member answers the staff notification (which proves they are staff)."""
        note = self.notification().message
        self.deliver(customer_mail(
            sender=self.staff, name="Team Leader", to=self.address, subject=f"Re: {note['Subject']}",
            at=at, text=text, in_reply_to=note["Message-ID"]), at)

    def sent(self) -> list[Sent]:
        return [(m.message["X-Complaints-Worker-Purpose"],
                 parsedate_to_datetime(str(m.message["Date"])).astimezone(UTC), tuple(m.rcpt_tos))
                for m in self.smtp.received]

    def live(self, runs: Iterable[datetime],
             before_run: dict[datetime, Callable[[], None]] | None = None) -> None:
        """A pass at each run; mail due in at an instant is delivered just before its pass."""
        before_run = before_run or {}
        for now in sorted({*runs, *before_run}):
            if now in before_run:
                before_run[now]()
            self.worker.once(now)


def schedule(received: datetime, last_day: date, instants: Iterable[datetime]) -> list[datetime]:
    """Passes: at receipt, DAILY_RUNS every day to `last_day`, and at and 1 s before each instant."""
    runs = {received}
    day = local_date(received)
    while day <= last_day:
        runs.update(local(day, hhmm) for hhmm in DAILY_RUNS)
        day += timedelta(days=1)
    for instant in instants:
        runs.update((instant, instant - SECOND))
    last = local(last_day, DAILY_RUNS[-1])
    return sorted(r for r in runs if received <= r <= last)


def assert_sent_exactly(actual: list[Sent], expected: list[Sent], label: str) -> None:
    def lines(rows: Iterable[Sent]) -> str:
        ordered = sorted(rows, key=lambda row: (row[1], row[0], row[2]))
        return "\n".join(f"    {p:<20} {describe(w)} -> {', '.join(to)}"
                         for p, w, to in ordered) or "    (none)"

    missing = Counter(expected) - Counter(actual)
    unexpected = Counter(actual) - Counter(expected)
    assert not missing and not unexpected, (
        f"{label}: the worker's emails differ from the expected ones\n"
        f"  MISSING (expected, not sent):\n{lines(missing.elements())}\n"
        f"  UNEXPECTED (sent, not expected):\n{lines(unexpected.elements())}\n"
        f"  actual ({len(actual)}):\n{lines(actual)}\n"
        f"  expected ({len(expected)}):\n{lines(expected)}")


# --------------------------------------------------------------------------- the lives

@dataclass(frozen=True)
class Life:
    provider: str
    received: datetime
    expected: tuple[Sent, ...]
    note: str = ""

    @property
    def last_day(self) -> date:
        return local_date(self.received) + timedelta(weeks=10)

    @property
    def adr(self) -> datetime:
        return adr_threshold(self.received)


def at_receipt(received: datetime) -> list[Sent]:
    return [("acknowledgement", received, (CUSTOMER,)), ("staff-notification", received, (TEAM,))]


def updates(days: Iterable[date]) -> list[Sent]:
    """Claranet's automatic update: 30 minutes before the 17:30 close of each given day."""
    return [("update", local(day, "17:00"), (CUSTOMER,)) for day in days]


def daily_updates(received: datetime, last_day: date) -> list[Sent]:
    """One on every working day after the day of the acknowledgement (sent at receipt)."""
    return updates(working_days(local_date(received) + timedelta(days=1), last_day))


def claranet_easter() -> Life:
    # Wed 1 April 2026, 10:00 BST; first raised before 8 April: the 8-week threshold. The
    # window holds Easter (Good Friday 3 April, Easter Monday 6 April) and both May bank holidays.
    received = local(date(2026, 4, 1), "10:00")
    adr = local(date(2026, 5, 27), "10:00")  # RULES-RESEARCH §4 WE9b: 2026-05-27T09:00:00Z.
    assert adr == adr_threshold(received) == datetime(2026, 5, 27, 9, 0, tzinfo=UTC)
    return Life("claranet-soho", received, (
        *at_receipt(received),
        # initial_response, 8.5 business hours: Wed 10:00-17:30 (7.5 h) + Thu 09:00-10:00.
        # Reminder 2 business hours before: Thu 09:00-10:00 (1 h) + Wed 16:30-17:30 (1 h).
        ("reminder", local(date(2026, 4, 1), "16:30"), role("claranet-soho", 1)),
        ("escalation", local(date(2026, 4, 2), "10:00"), escalated_to("claranet-soho")),
        # daily_update from Thu 2 April; none on 3, 6 April, 4, 25 May or at weekends.
        *daily_updates(received, local_date(received) + timedelta(weeks=10)),
        ("adr-letter", adr, (CUSTOMER,)),
    ))


def claranet_autumn() -> Life:
    # Fri 23 October 2026, 16:00 BST, the seed's own example ("received at 4pm on a Friday will
    # receive an initial response by 4pm on a Monday"); the clocks go back on Sun 25 October and
    # the ten weeks end on 1 January 2027 (25, 28 December and 1 January are bank holidays).
    received = local(date(2026, 10, 23), "16:00")
    adr = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)  # 16:00 GMT: the same wall-clock time.
    assert adr == adr_threshold(received)
    return Life("claranet-soho", received, (
        *at_receipt(received),
        # initial_response: Fri 16:00-17:30 (1.5 h) + Mon 09:00-16:00 (7 h): Mon 16:00 GMT.
        ("reminder", datetime(2026, 10, 26, 14, 0, tzinfo=UTC), role("claranet-soho", 1)),
        ("escalation", datetime(2026, 10, 26, 16, 0, tzinfo=UTC), escalated_to("claranet-soho")),
        *daily_updates(received, local_date(received) + timedelta(weeks=10)),
        ("adr-letter", adr, (CUSTOMER,)),
    ))


def claranet_christmas_eve_evening() -> Life:
    # Thu 24 December 2026, 18:00 GMT: a working day, after the 17:30 close. The acknowledgement
    # goes at once (Thursday), so the first update is owed on the next working day, Tue 29
    # December ("starting on the next working day", says the acknowledgement itself).
    received = local(date(2026, 12, 24), "18:00")
    adr = datetime(2027, 2, 4, 18, 0, tzinfo=UTC)
    assert adr == adr_threshold(received)
    return Life("claranet-soho", received, (
        *at_receipt(received),
        # initial_response: deemed start Tue 29 December 09:00, + 8.5 h: the 17:30 close.
        ("reminder", local(date(2026, 12, 29), "15:30"), role("claranet-soho", 1)),
        ("escalation", local(date(2026, 12, 29), "17:30"), escalated_to("claranet-soho")),
        *daily_updates(received, local_date(received) + timedelta(weeks=10)),
        ("adr-letter", adr, (CUSTOMER,)),
    ), note="received after hours: the first update is owed on Tue 29 Dec, the first working "
            "day after the acknowledgement's day (Thu 24 Dec)")


def halo() -> Life:
    # Tue 7 April 2026 23:30 UTC is Wed 8 April 00:30 BST: first raised ON 8 April by the UK
    # local date, so 6 weeks (the UTC date would wrongly give 8). Received outside hours: the
    # business clock starts at Wed 08:30.
    received = datetime(2026, 4, 7, 23, 30, tzinfo=UTC)
    adr = local(date(2026, 5, 20), "00:30")
    assert adr == adr_threshold(received) == datetime(2026, 5, 19, 23, 30, tzinfo=UTC)
    # written_response, 30 working days at the 17:00 close; day 0 is Wed 8 April; 4 May is a
    # bank holiday: Thu 21 May 2026. Reminder 2 business hours before: 15:00.
    response_day = nth_working_day_after(date(2026, 4, 8), 30)
    assert response_day == date(2026, 5, 21)
    return Life("halo-tech-group", received, (
        *at_receipt(received),
        ("reminder", local(response_day, "15:00"), role("halo-tech-group", 1)),
        ("escalation", local(response_day, "17:00"), escalated_to("halo-tech-group")),
        ("adr-letter", adr, (CUSTOMER,)),
    ))


def infinity() -> Life:
    # Tue 20 October 2026, 11:00 BST; the clocks go back on Sun 25 October, so both the
    # business deadline and the ADR threshold are in GMT. The window ends on 29 December.
    received = local(date(2026, 10, 20), "11:00")
    adr = local(date(2026, 12, 1), "11:00")
    assert adr == adr_threshold(received) == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    # email_response, 5 working days at the 17:30 close: 21, 22, 23, 26, 27 October.
    response_day = nth_working_day_after(date(2026, 10, 20), 5)
    assert response_day == date(2026, 10, 27)
    return Life("infinity-group", received, (
        *at_receipt(received),
        ("reminder", datetime(2026, 10, 27, 15, 30, tzinfo=UTC), role("infinity-group", 1)),
        ("escalation", datetime(2026, 10, 27, 17, 30, tzinfo=UTC), escalated_to("infinity-group")),
        ("adr-letter", adr, (CUSTOMER,)),
    ))


def all_communications() -> Life:
    # Thu 24 December 2026, 11:00 GMT, across Christmas and New Year (25, 28 December and
    # 1 January are bank holidays). RULES-RESEARCH §4 WE5a/WE5b.
    received = datetime(2026, 12, 24, 11, 0, tzinfo=UTC)
    adr = datetime(2027, 2, 4, 11, 0, tzinfo=UTC)
    assert adr == adr_threshold(received)
    # resolution_target, 10 working days at the 17:30 close: 29, 30, 31 Dec, 4-8, 11, 12 Jan.
    target_day = nth_working_day_after(date(2026, 12, 24), 10)
    assert target_day == date(2027, 1, 12)
    return Life("all-communications", received, (
        *at_receipt(received),
        ("reminder", local(target_day, "15:30"), role("all-communications", 1)),
        ("escalation", local(target_day, "17:30"), escalated_to("all-communications")),
        ("adr-letter", adr, (CUSTOMER,)),
    ))


def ombudsman() -> Life:
    # Fri 28 August 2026, 14:00 BST; Mon 31 August is a bank holiday; hours 09:00-17:00.
    # No regime: no ADR letter, ever.
    received = local(date(2026, 8, 28), "14:00")
    provider = "communications-ombudsman"
    return Life(provider, received, (
        *at_receipt(received),
        # acknowledgement (a staff obligation), the next working day at the same clock time:
        # Tue 1 September 14:00; the reminder 2 business hours before: Tue 12:00.
        ("reminder", local(date(2026, 9, 1), "12:00"), role(provider, 1)),
        ("escalation", local(date(2026, 9, 1), "14:00"), escalated_to(provider)),
        # first_response, the 2nd working day at the same clock time: Wed 2 September 14:00.
        ("reminder", local(date(2026, 9, 2), "12:00"), role(provider, 1)),
        ("escalation", local(date(2026, 9, 2), "14:00"), escalated_to(provider)),
        # The acknowledgement's hard limit, 24 business hours: Fri 14:00-17:00 (3 h), Tue (8 h),
        # Wed (8 h), Thu 09:00-14:00 (5 h): Thu 3 September 14:00, to the stage-1 owner.
        ("alert", local(date(2026, 9, 3), "14:00"), role(provider, 1)),
    ))


LIVES = {
    "claranet-soho-easter-8-weeks": claranet_easter,
    "claranet-soho-friday-4pm-dst-christmas": claranet_autumn,
    "claranet-soho-christmas-eve-after-hours": claranet_christmas_eve_evening,
    "halo-tech-group-8-april-0030-bst": halo,
    "infinity-group-dst": infinity,
    "all-communications-christmas": all_communications,
    "communications-ombudsman-august-bank-holiday": ombudsman,
}


def run_unanswered(room: Mailroom, received: datetime, last_day: date, expected: Iterable[Sent],
                   label: str) -> None:
    """Deliver the complaint, run the passes to `last_day`, compare everything sent."""
    expected = list(expected)
    runs = schedule(received, last_day, [when for _, when, _ in expected])
    room.complaint(received)
    room.live(runs)
    assert_sent_exactly(room.sent(), [row for row in expected if row[1] <= runs[-1]], label)


@pytest.mark.parametrize("life", list(LIVES))
def test_ten_week_life_of_an_unanswered_complaint(tmp_path: Path, pymap, smtp, life: str):
    case = LIVES[life]()
    assert is_working_day(local_date(case.received))
    adr_letters = [when for purpose, when, _ in case.expected if purpose == "adr-letter"]
    if case.provider == "communications-ombudsman":
        assert adr_letters == [], "not a communications provider: no ADR letter"
    else:
        assert adr_letters == [case.adr], "exactly one ADR letter, at the threshold"
    assert all(a - SECOND in schedule(case.received, case.last_day, [a]) for a in adr_letters)
    run_unanswered(Mailroom(tmp_path, pymap, smtp, case.provider), case.received, case.last_day,
                   case.expected, f"{life}, received {describe(case.received)}"
                   + (f" ({case.note})" if case.note else ""))


@pytest.mark.parametrize(("received", "response_due", "first_update"), [
    # In hours, one minute before the close (a control): Tue 17:29 + 1 min, Wed 09:00 + 8 h 29.
    (local(date(2026, 6, 16), "17:29"), local(date(2026, 6, 17), "17:29"), date(2026, 6, 17)),
    # Exactly at the close, so out of hours (half-open): the clock starts Wed 09:00.
    (local(date(2026, 6, 16), "17:30"), local(date(2026, 6, 17), "17:30"), date(2026, 6, 17)),
    # On a Saturday: acknowledged on Saturday, so Monday is the next working day.
    (local(date(2026, 6, 13), "11:00"), local(date(2026, 6, 15), "17:30"), date(2026, 6, 15)),
], ids=["tue-17:29-in-hours", "tue-17:30-at-the-close", "saturday"])
def test_claranet_updates_start_on_the_working_day_after_the_acknowledgement(
        tmp_path: Path, pymap, smtp, received: datetime, response_due: datetime, first_update: date):
    provider = "claranet-soho"
    last_day = local_date(received) + timedelta(weeks=2)
    expected = [
        *at_receipt(received),
        # initial_response (8.5 business hours) and its reminder 2 business hours before.
        ("reminder", response_due - timedelta(hours=2), role(provider, 1)),
        ("escalation", response_due, escalated_to(provider)),
        *updates(working_days(first_update, last_day)),
    ]
    assert first_update == nth_working_day_after(local_date(received), 1)
    run_unanswered(Mailroom(tmp_path, pymap, smtp, provider), received, last_day, expected,
                   f"claranet-soho, acknowledged {describe(received)}: one update on every working "
                   f"day after the acknowledgement's day, from {first_update:%a %d %b}")


# --------------------------------------------------------------------------- resolved, reopened

RESOLVING_REPLY = "#resolved\n\nYour line is fixed: the engineer replaced the faulty router.\n"


def test_resolved_in_week_3_and_reopened_in_week_4_keeps_the_original_adr_clock(
        tmp_path: Path, pymap, smtp):
    life = claranet_easter()
    resolved_at = local(date(2026, 4, 15), "11:00")  # week 3 (day 14)
    reopened_at = local(date(2026, 4, 22), "11:00")  # week 4 (day 21)
    room = Mailroom(tmp_path, pymap, smtp, life.provider)
    staff = (room.staff,)
    expected = [row for row in life.expected if row[0] not in ("update", "adr-letter")] + [
        # Updates on every working day until the resolution, none on its own day.
        *updates(working_days(date(2026, 4, 2), date(2026, 4, 14))),
        # The resolving reply: its text relayed, the resolution letter, the staff confirmation.
        ("relay", resolved_at, (CUSTOMER,)),
        ("resolution", resolved_at, (CUSTOMER,)),
        ("confirmation", resolved_at, staff),
        # Reopened: confirmed; that day's update (owed by 17:30) and every later one resume.
        ("confirmation", reopened_at, staff),
        *updates(working_days(date(2026, 4, 22), life.last_day)),
        # The ADR clock was never reset: the original 8-week threshold.
        ("adr-letter", life.adr, (CUSTOMER,)),
    ]
    runs = schedule(life.received, life.last_day, [when for _, when, _ in expected])
    room.complaint(life.received)
    room.live(runs, before_run={
        resolved_at: lambda: room.staff_reply(RESOLVING_REPLY, resolved_at),
        reopened_at: lambda: room.staff_reply("#reopen\n", reopened_at),
    })
    assert room.worker.case(room.reference())["status"] == "open"
    assert_sent_exactly(room.sent(), expected, "claranet-soho, resolved in week 3, reopened in week 4")


def test_staff_update_replaces_the_days_update_and_resolution_stops_everything(
        tmp_path: Path, pymap, smtp):
    life = claranet_easter()
    staff_update_at = local(date(2026, 4, 9), "10:00")  # Thu, week 2
    resolved_at = local(date(2026, 4, 15), "11:00")
    room = Mailroom(tmp_path, pymap, smtp, life.provider)
    expected = [row for row in life.expected if row[0] not in ("update", "adr-letter")] + [
        *updates(d for d in working_days(date(2026, 4, 2), date(2026, 4, 14))
                 if d != date(2026, 4, 9)),
        ("relay", staff_update_at, (CUSTOMER,)),
        ("relay", resolved_at, (CUSTOMER,)),
        ("resolution", resolved_at, (CUSTOMER,)),
        ("confirmation", resolved_at, (room.staff,)),
    ]
    # Also run at and just before the (cancelled) threshold and the updates that are not owed.
    runs = schedule(life.received, life.last_day, [when for _, when, _ in life.expected])
    room.complaint(life.received)
    room.live(runs, before_run={
        staff_update_at: lambda: room.staff_reply(
            "Hello Pat,\n\nAn engineer is booked for Monday morning.\n", staff_update_at),
        resolved_at: lambda: room.staff_reply(RESOLVING_REPLY, resolved_at),
    })
    assert room.worker.case(room.reference())["status"] == "resolved"
    assert_sent_exactly(room.sent(), expected, "claranet-soho, staff update in week 2, resolved "
                                               "in week 3 for good: no ADR letter ever")


def test_reopened_after_the_threshold_passed_gets_the_adr_letter_at_once(
        tmp_path: Path, pymap, smtp):
    life = claranet_easter()
    resolved_at = local(date(2026, 5, 20), "11:00")  # week 8, before the 27 May threshold
    reopened_at = local(date(2026, 6, 3), "11:00")  # week 10, after it
    room = Mailroom(tmp_path, pymap, smtp, life.provider)
    staff = (room.staff,)
    expected = [row for row in life.expected if row[0] not in ("update", "adr-letter")] + [
        *updates(working_days(date(2026, 4, 2), date(2026, 5, 19))),
        ("relay", resolved_at, (CUSTOMER,)),
        ("resolution", resolved_at, (CUSTOMER,)),
        ("confirmation", resolved_at, staff),
        ("confirmation", reopened_at, staff),
        # Still unresolved after the threshold: the letter is overdue, so it goes at once.
        ("adr-letter", reopened_at, (CUSTOMER,)),
        *updates(working_days(date(2026, 6, 3), life.last_day)),
    ]
    runs = schedule(life.received, life.last_day, [*(when for _, when, _ in expected), life.adr])
    room.complaint(life.received)
    room.live(runs, before_run={
        resolved_at: lambda: room.staff_reply(RESOLVING_REPLY, resolved_at),
        reopened_at: lambda: room.staff_reply("#reopen\n", reopened_at),
    })
    assert_sent_exactly(room.sent(), expected,
                        "claranet-soho, resolved in week 8, reopened in week 10 (after the threshold)")


# --------------------------------------------------------------------------- idempotence

@pytest.mark.parametrize("life", ["infinity-group-dst", "claranet-soho-easter-8-weeks"])
def test_repeated_passes_at_the_threshold_send_the_adr_letter_once(tmp_path: Path, pymap, smtp,
                                                                   life: str):
    case = LIVES[life]()
    room = Mailroom(tmp_path, pymap, smtp, case.provider)
    room.complaint(case.received)
    room.worker.once(case.received)
    room.worker.once(case.adr - SECOND)
    assert [p for p, _, _ in room.sent()].count("adr-letter") == 0, "not one second early"
    before = len(room.sent())
    for _ in range(5):
        room.worker.once(case.adr)
    room.worker = room.worker.restart()  # A fresh process on the same database.
    for _ in range(2):
        room.worker.once(case.adr)
    letters = [row for row in room.sent() if row[0] == "adr-letter"]
    assert letters == [("adr-letter", case.adr, (CUSTOMER,))], (
        f"expected one ADR letter at {describe(case.adr)}, got {len(letters)}: "
        + ", ".join(describe(w) for _, w, _ in letters))
    assert len(room.sent()) == before + 1, (
        "the passes at the threshold sent something besides the one ADR letter: "
        f"{room.sent()[before:]}")
