"""Parts of the SIGKILL drill (tests/test_kill_drill.py).

- `plan_mail`: a deterministic, seeded mix of inbound mail with what must become of each message;
- `append`: IMAP APPEND that returns the UID the server gave each message (UIDPLUS), so the
  drill can find every delivered message in the worker's database;
- `WorkerProcess`: `complaints-worker once` as a real subprocess, SIGKILLed after a delay;
- `Drill`: delivers the mail and kills and restarts the worker, recording where each kill
  landed (`stage_of`) and what moved meanwhile (`Progress`);
- `Ledger`: what the worker's database holds at the end, read with its own models.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.policy import SMTP
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

from imapclient import IMAPClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, ROOT
from worker.adapters.db_models import Case, CaseEvent, InboundMessage, Outbox, Timer
from worker.demo_mail import bounce, customer_mail
from worker.embedded import EmbeddedSmtpServer, ReceivedMail

LONDON = ZoneInfo("Europe/London")


class Kind(StrEnum):
    COMPLAINT = "complaint"
    FOLLOW_UP = "follow-up"  # the customer writes again, In-Reply-To their complaint
    AUTO_REPLY = "auto-reply"  # an out-of-office answering a thread we know
    STRAY_AUTO_REPLY = "stray-auto-reply"  # an out-of-office answering nothing we know
    LIST_MAIL = "list-mail"  # List-Id / Precedence: bulk
    DUPLICATE = "duplicate"  # the same bytes (same Message-ID) delivered again
    STRAY_BOUNCE = "stray-bounce"  # a DSN about mail we never sent
    BOUNCE = "bounce"  # a DSN returning one of our acknowledgements (made once it exists)
    MALFORMED = "malformed"
    OVERSIZE = "oversize"


AUTOMATED = {Kind.AUTO_REPLY, Kind.STRAY_AUTO_REPLY, Kind.LIST_MAIL, Kind.STRAY_BOUNCE,
             Kind.BOUNCE}

# What the worker's quarantine reason must say for each kind it cannot attach to a case.
QUARANTINE_REASONS = {
    Kind.STRAY_AUTO_REPLY: "matching no case",
    Kind.LIST_MAIL: "matching no case",
    Kind.STRAY_BOUNCE: "matching no case",
    Kind.MALFORMED: "unparseable",
}
# A new complaint, whatever its size: one over the size limit opens its case from its header.
OPENS_CASE = {Kind.COMPLAINT, Kind.OVERSIZE}


@dataclass(frozen=True, kw_only=True, slots=True)
class Planned:
    """One message to deliver, and what must become of it."""

    index: int
    kind: Kind
    mailbox: str  # the mailbox name, which is also its provider id
    batch: int
    internaldate: datetime
    raw: bytes
    message_id: str | None
    # The complaint whose case this message belongs to (follow-ups, auto-replies, bounces).
    parent: int | None = None
    # For a duplicate: the message delivered again.
    original: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MailPlan:
    messages: list[Planned]
    max_message_bytes: int

    def case_of(self, message: Planned) -> int | None:
        """The index of the complaint whose case `message` must be recorded on, if any."""
        if message.kind in OPENS_CASE:
            return message.index
        if message.kind is Kind.DUPLICATE:
            assert message.original is not None
            return self.case_of(self.messages[message.original])
        return message.parent

    def expected_status(self, message: Planned) -> str:
        if message.kind is Kind.DUPLICATE:
            return "duplicate"
        return "quarantined" if message.kind in QUARANTINE_REASONS else "processed"

    def complaints(self) -> list[Planned]:
        return [m for m in self.messages if m.kind in OPENS_CASE]


# Batches of mail, one per day around 8 April 2026, when the ADR threshold drops from 8 weeks
# to 6 for complaints first raised from that day: the drill has cases on both sides.
BATCH_DAYS = [date(2026, 4, 6), date(2026, 4, 7), date(2026, 4, 8), date(2026, 4, 9),
              date(2026, 4, 10)]

_WEIGHTS = {Kind.COMPLAINT: 56, Kind.FOLLOW_UP: 15, Kind.AUTO_REPLY: 8, Kind.STRAY_AUTO_REPLY: 2,
            Kind.LIST_MAIL: 4, Kind.DUPLICATE: 8}
_DUPLICABLE = {Kind.COMPLAINT, Kind.FOLLOW_UP, Kind.AUTO_REPLY, Kind.STRAY_AUTO_REPLY,
               Kind.LIST_MAIL}
_FIRST = ["Ann", "Bilal", "Chloé", "Dafydd", "Eilidh", "Femi", "Grace", "Hamish", "Iwona", "José"]
_LAST = ["Smith", "O'Neill", "Nowak", "Okafor", "Jones", "Müller", "Patel", "Evans", "Taylor"]
_TROUBLES = ["my broadband keeps dropping every evening", "I was billed twice for March",
             "the engineer never arrived", "my number was ported without my consent",
             "the router you sent is faulty", "my line has been dead for three days"]


def plan_mail(mailboxes: Sequence[str], *, total: int = 500, seed: int = 20260406,
              max_message_bytes: int = 64 * 1024, mix: dict[Kind, int] | None = None,
              specials: bool = True) -> MailPlan:
    """`total` messages over `mailboxes`, in len(BATCH_DAYS) batches; deterministic per seed.

    Besides the weighted `mix`, a plan with `specials` has a stray DSN, two malformed
    messages and one over `max_message_bytes`, at seeded places.
    """
    rng = random.Random(seed)
    extra = {Kind.STRAY_BOUNCE: 1, Kind.MALFORMED: 2, Kind.OVERSIZE: 1} if specials else {}
    kinds, weights = zip(*(mix or _WEIGHTS).items(), strict=True)
    slots = rng.choices(kinds, weights=weights, k=total - sum(extra.values()))
    for kind, count in extra.items():
        for _ in range(count):
            slots.insert(rng.randrange(len(slots) // 5, len(slots)), kind)
    messages: list[Planned] = []
    per_batch = -(-total // len(BATCH_DAYS))
    for index, kind in enumerate(slots):
        batch = index // per_batch
        day = BATCH_DAYS[batch]
        # Office hours in London, in delivery order.
        at = datetime(day.year, day.month, day.day, 8, tzinfo=UTC) + timedelta(
            seconds=(index % per_batch) * 60)
        mailbox = rng.choice(mailboxes)
        messages.append(_make(rng, index, kind, mailbox, batch, at, messages, max_message_bytes))
    return MailPlan(messages=messages, max_message_bytes=max_message_bytes)


def _make(rng: random.Random, index: int, kind: Kind, mailbox: str, batch: int, at: datetime,
          earlier: list[Planned], max_bytes: int) -> Planned:
    to = PROVIDER_ADDRESSES[mailbox]
    message_id = f"<drill-{index}@example.org>"
    same_box = [m for m in earlier if m.mailbox == mailbox]
    complaints = [m for m in same_box if m.kind is Kind.COMPLAINT]
    if kind in (Kind.FOLLOW_UP, Kind.AUTO_REPLY) and not complaints:
        kind = Kind.COMPLAINT
    if kind is Kind.DUPLICATE and not any(m.kind in _DUPLICABLE for m in same_box):
        kind = Kind.COMPLAINT
    base = functools.partial(Planned, index=index, mailbox=mailbox, batch=batch, internaldate=at)

    if kind is Kind.DUPLICATE:
        # Mail as a person or a mail loop would send it twice; not the special cases.
        original = rng.choice([m for m in same_box if m.kind in _DUPLICABLE])
        return base(kind=kind, raw=original.raw, message_id=original.message_id,
                    original=original.index)
    if kind is Kind.COMPLAINT:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        trouble = rng.choice(_TROUBLES)
        text = f"Hello,\n\n{trouble.capitalize()} and nobody has fixed it.\n\n{name}\n"
        raw = _mail(sender=f"customer{index}@example.org", name=name, to=to, at=at,
                    subject=f"Complaint: {trouble}", message_id=message_id,
                    text=text if rng.random() < 0.8 else None,
                    html=f"<p>{trouble}</p>" if rng.random() < 0.4 else None)
        return base(kind=kind, raw=raw, message_id=message_id)
    if kind is Kind.FOLLOW_UP:
        parent = rng.choice(complaints)
        raw = _mail(sender=f"customer{parent.index}@example.org", name="", to=to, at=at,
                    subject="Re: my complaint", message_id=message_id,
                    text="Any news? It is still not working.\n", in_reply_to=parent.message_id)
        return base(kind=kind, raw=raw, message_id=message_id, parent=parent.index)
    if kind is Kind.AUTO_REPLY:
        parent = rng.choice(complaints)
        raw = _mail(sender=f"customer{parent.index}@example.org", name="", to=to, at=at,
                    subject="Automatic reply: your complaint", message_id=message_id,
                    text="I am out of the office until Monday.\n", in_reply_to=parent.message_id,
                    headers={"Auto-Submitted": "auto-replied"})
        return base(kind=kind, raw=raw, message_id=message_id, parent=parent.index)
    if kind is Kind.STRAY_AUTO_REPLY:
        raw = _mail(sender=f"someone{index}@example.net", name="", to=to, at=at,
                    subject="Out of office", message_id=message_id,
                    text="I am away this week.\n", headers={"Auto-Submitted": "auto-replied"})
        return base(kind=kind, raw=raw, message_id=message_id)
    if kind is Kind.LIST_MAIL:
        raw = _mail(sender="news@lists.example.com", name="Weekly News", to=to, at=at,
                    subject=f"Newsletter {index}", message_id=message_id, text="Offers!\n",
                    headers={"List-Id": "<weekly.lists.example.com>", "Precedence": "bulk"})
        return base(kind=kind, raw=raw, message_id=message_id)
    if kind is Kind.STRAY_BOUNCE:
        never_sent = _mail(sender=to, name="", to="gone@example.net", at=at, subject="Hello",
                           message_id="<never-sent@example.org>", text="x\n")
        raw = _with_message_id(bounce(mta="mx.example.net", to=to, failed_recipient="gone@example.net",
                                      original=never_sent, at=at), message_id)
        return base(kind=kind, raw=raw, message_id=message_id)
    if kind is Kind.MALFORMED:
        # No header at all, or a header without any sender: nothing the worker could answer.
        raw = (f"this is not an email {index}\r\n\r\nat all\r\n".encode() if index % 2
               else f"Subject: orphan {index}\r\nMessage-ID: {message_id}\r\n\r\nbody\r\n".encode())
        return base(kind=kind, raw=raw, message_id=None if index % 2 else message_id)
    assert kind is Kind.OVERSIZE
    raw = _mail(sender=f"customer{index}@example.org", name="Big Sender", to=to, at=at,
                subject="Photos of the fault", message_id=message_id,
                text="Please see below.\n" + ("x" * 76 + "\n") * (max_bytes // 77 + 100))
    return base(kind=kind, raw=raw, message_id=message_id)


def _mail(*, sender: str, name: str, to: str, at: datetime, subject: str, message_id: str,
          text: str | None, html: str | None = None, in_reply_to: str | None = None,
          headers: dict[str, str] | None = None) -> bytes:
    if text is None and html is None:
        text = "(see subject)\n"
    raw = customer_mail(sender=sender, name=name, to=to, subject=subject, at=at, text=text,
                        html=html, in_reply_to=in_reply_to, headers=headers)
    return _with_message_id(raw, message_id)


def _with_message_id(raw: bytes, message_id: str) -> bytes:
    """The builders pick random Message-IDs; the drill's mail must be the same on every run."""
    msg = message_from_bytes(raw, policy=SMTP)
    msg.replace_header("Message-ID", message_id)
    return msg.as_bytes()


def bounce_of(mail: ReceivedMail, *, mailbox: str, at: datetime) -> bytes:
    """A permanent DSN returning `mail` (one of our acknowledgements) from its recipient."""
    return bounce(mta="mx.example.org", to=PROVIDER_ADDRESSES[mailbox],
                  failed_recipient=mail.rcpt_tos[0], original=mail.raw, at=at)


# --------------------------------------------------------------------------------- IMAP

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def append(port: int, login: str, items: Iterable[tuple[bytes, datetime]]) -> list[int]:
    """APPEND each (raw, internaldate) to INBOX; the UIDs the server assigned, in order."""
    uids = []
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30) as client:
        client.login(login, PASSWORD)
        for raw, internaldate in items:
            reply = client.append("INBOX", raw, msg_time=internaldate)
            found = _APPENDUID.search(reply)
            assert found, f"the server did not report the APPENDUID: {reply!r}"
            uids.append(int(found.group(2)))
    return uids


def unmarked(port: int, login: str, keyword: str, *, moves: bool) -> list[int]:
    """UIDs left in INBOX that the worker has not flagged (or, when it moves mail, not moved)."""
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30) as client:
        client.login(login, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        return list(client.search(["ALL"] if moves else ["UNKEYWORD", keyword]))


# ------------------------------------------------------------------------------ thresholds

def adr_threshold_weeks(first_raised: datetime) -> int:
    """The regime's ADR threshold for a complaint first raised at that instant (London date).

    Read from the regime file itself, not the worker's rule loader, so the drill's expectation
    does not come from the code under test.
    """
    regime = tomllib.loads((ROOT / "rules" / "regimes" / "ofcom-gc-c4.toml").read_text())
    day = first_raised.astimezone(LONDON).date()
    for band in regime["regime"]["adr_threshold"]:
        if "first_raised_before" in band and day < band["first_raised_before"]:
            return int(band["weeks"])
        if "first_raised_from" in band and day >= band["first_raised_from"]:
            return int(band["weeks"])
    raise AssertionError(f"no ADR threshold for {day}")


# ---------------------------------------------------------------------------- the process

@dataclass(kw_only=True, slots=True)
class Run:
    number: int
    phase: int
    now: datetime
    kill_after: float | None  # seconds; None for a run left to finish
    log: Path
    elapsed: float = 0.0
    # Seconds from the process start to its first IMAP command: the end of start-up.
    ready: float | None = None
    killed: bool = False
    stage: str = ""


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) DEBUG imapclient", re.M)


class WorkerProcess:
    """Runs `complaints-worker once` as its own process, as cron or an operator would."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.runs: list[Run] = []

    def once(self, *, phase: int, now: datetime, kill_after: float | None = None,
             kill_when: Callable[[str], bool] | None = None, timeout: float = 60.0) -> Run:
        """One pass; SIGKILLed after `kill_after` seconds, or once its log satisfies `kill_when`."""
        run = Run(number=len(self.runs) + 1, phase=phase, now=now, kill_after=kill_after,
                  log=self.logs / f"run-{len(self.runs) + 1:03d}.log")
        started, wall = time.monotonic(), time.time()
        deadline = started + (kill_after if kill_after is not None else timeout)
        with open(run.log, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "--config", str(self.config),
                 "--log-level", "DEBUG", "once", "--now", now.isoformat()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, cwd=ROOT)
            while process.poll() is None:
                left = deadline - time.monotonic()
                if kill_when is not None and kill_when(run.log.read_text(errors="replace")):
                    left = 0
                if left <= 0:
                    if kill_after is None and kill_when is None:
                        process.kill()
                        process.wait()
                        raise AssertionError(f"run {run.number} still going after {timeout}s")
                    # kill -9: no handler, no finally block, no flush runs in the worker.
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    run.killed = True
                    break
                # Waiting on the process itself; the log is looked at between waits.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=min(left, 0.002 if kill_when else 0.5))
        run.elapsed = time.monotonic() - started
        text = run.log.read_text(errors="replace")
        if not run.killed:
            assert process.returncode == 0, \
                f"run {run.number} failed ({process.returncode}):\n{text[-3000:]}"
        found = _LOG_TIME.search(text)
        if found:
            first = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            run.ready = first - wall
        self.runs.append(run)
        return run


# ------------------------------------------------------------------------------ the ledger

@dataclass(kw_only=True)
class Ledger:
    """What the worker's database holds, read with SQLAlchemy on its schema."""

    inbound: list[InboundMessage]
    cases: list[Case]
    outbox: list[Outbox]
    timers: list[Timer]
    events: list[CaseEvent]

    @classmethod
    def read(cls, db_url: str) -> Ledger:
        engine = create_engine(db_url)
        try:
            with Session(engine) as session:
                return cls(
                    inbound=list(session.scalars(select(InboundMessage))),
                    cases=list(session.scalars(select(Case))),
                    outbox=list(session.scalars(select(Outbox))),
                    timers=list(session.scalars(select(Timer))),
                    events=list(session.scalars(select(CaseEvent))),
                )
        finally:
            engine.dispose()

    def inbound_by_uid(self) -> dict[tuple[str, int], InboundMessage]:
        return {(row.mailbox, row.uid): row for row in self.inbound}

    def timer_fired_events(self) -> Counter[tuple[int, str, str, int]]:
        """How many times each (case, rule, kind, occurrence) timer fired, by the audit trail."""
        return Counter((e.case_id, e.detail["rule"], e.detail["kind"], e.detail["occurrence"])
                       for e in self.events if e.kind == "timer_fired")


def ids_by_case(mails: Iterable[ReceivedMail], purpose: str) -> dict[str, list[str]]:
    """Message-IDs the sink received with this X-Complaints-Worker-Purpose, per case reference."""
    found: dict[str, list[str]] = defaultdict(list)
    for mail in mails:
        if mail.message["X-Complaints-Worker-Purpose"] == purpose:
            found[str(mail.message["X-Complaints-Worker-Case"])].append(
                str(mail.message["Message-ID"]))
    return found


# ------------------------------------------------------------------- where a kill landed

_COMMAND = re.compile(r"> b'[A-Z]+\d+ (UID [A-Z]+|[A-Z]+)(.*)'?$")


def stage_of(log_lines: Sequence[str], *, mailboxes: int) -> str:
    """Where the worker was when it died, from its DEBUG log (imapclient's protocol trace).

    The worker logs nothing of its own per step, but imapclient traces every IMAP command,
    and asyncio announces its event loop when the outbox dispatch starts; a pass goes
    poll (mailbox by mailbox) -> timer sweep -> dispatch, so the last of those lines places
    the kill.
    """
    last_command, completed, logouts = "", False, 0
    for line in log_lines:
        if "asyncio: Using selector" in line:
            return "SMTP dispatch"
        if "imapclient" not in line:
            continue
        found = _COMMAND.search(line)
        if found:
            last_command, completed = found.group(1) + found.group(2), False
            logouts += found.group(1) == "LOGOUT"
        elif re.search(r"< b'[A-Z]+\d+ (OK|NO|BAD)", line):
            completed = True
    if not last_command:
        return "start-up"
    if last_command.startswith("LOGOUT") and logouts >= mailboxes:
        return "timer sweep"
    if "BODY.PEEK[]" in last_command or "BODY.PEEK[HEADER]" in last_command:
        return "ingest transactions" if completed else "IMAP fetch"
    if last_command.startswith(("UID STORE", "UID MOVE", "UID COPY")):
        return "IMAP flag/move"
    if last_command.startswith("UID FETCH"):
        return "IMAP fetch"
    return "IMAP open/search"


# ------------------------------------------------------------------------------ progress

@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """Counts that move as the worker works; read between runs."""

    stored: int
    cases: int
    outbox: tuple[tuple[str, int], ...]
    timers: tuple[tuple[str, int], ...]
    due_timers: int
    due_outbox: int
    fired: int  # timer_fired audit events
    sink: int

    @classmethod
    def read(cls, session: Session, *, now: datetime, sink: int) -> Progress:
        def by_status(model: type[Outbox] | type[Timer]) -> tuple[tuple[str, int], ...]:
            rows = session.execute(select(model.status, func.count()).group_by(model.status))
            return tuple(sorted((status, count) for status, count in rows))

        return cls(
            stored=session.scalar(select(func.count()).select_from(InboundMessage)) or 0,
            cases=session.scalar(select(func.count()).select_from(Case)) or 0,
            outbox=by_status(Outbox),
            timers=by_status(Timer),
            due_timers=session.scalar(select(func.count()).select_from(Timer).where(
                Timer.status == "pending", Timer.due_at <= now)) or 0,
            due_outbox=session.scalar(select(func.count()).select_from(Outbox).where(
                Outbox.status == "pending", Outbox.next_attempt_at <= now)) or 0,
            fired=session.scalar(select(func.count()).select_from(CaseEvent).where(
                CaseEvent.kind == "timer_fired")) or 0,
            sink=sink,
        )

    def count(self, pairs: tuple[tuple[str, int], ...], status: str) -> int:
        return dict(pairs).get(status, 0)

    @property
    def sent(self) -> int:
        return self.count(self.outbox, "sent")


# --------------------------------------------------------------------------------- the drill

@dataclass(kw_only=True)
class Kill:
    run: Run
    before: Progress
    after: Progress

    def line(self) -> str:
        r, b, a = self.run, self.before, self.after
        return (f"  run {r.number:3d} phase {r.phase} killed at {r.kill_after:5.2f}s "
                f"in {r.stage:<20} +{a.stored - b.stored:3d} stored "
                f"+{a.fired - b.fired:3d} timers +{a.sink - b.sink:3d} to SMTP "
                f"+{a.sent - b.sent:3d} marked sent")


class Drill:
    """Delivers the planned mail and runs, kills and restarts the worker, keeping the score."""

    def __init__(self, *, plan: MailPlan, config: Path, db_url: str, imap_port: int,
                 smtp: EmbeddedSmtpServer, workdir: Path, seed: int) -> None:
        self.plan = plan
        self.imap_port = imap_port
        self.smtp = smtp
        self.process = WorkerProcess(config, workdir)
        # No pooled connection stays open on the worker's database between reads.
        self.engine = create_engine(db_url, poolclass=NullPool)
        self.rng = random.Random(seed)
        self.uids: dict[int, int] = {}  # plan index -> UID in its mailbox's INBOX
        # The newest INTERNALDATE delivered or on its way: a pass's clock is never before it.
        self.latest = datetime.min.replace(tzinfo=UTC)
        self.kills: list[Kill] = []
        self.idle_seconds = 0.0
        self.ready_seconds = 0.0
        self.seconds_per_unit = 0.0

    def close(self) -> None:
        self.engine.dispose()

    @property
    def mailboxes(self) -> list[str]:
        return list(dict.fromkeys(m.mailbox for m in self.plan.messages))

    def progress(self, now: datetime) -> Progress:
        with Session(self.engine) as session:
            return Progress.read(session, now=now, sink=len(self.smtp.received))

    def deliver(self, messages: Sequence[Planned]) -> None:
        for mailbox in dict.fromkeys(m.mailbox for m in messages):
            mine = [m for m in messages if m.mailbox == mailbox]
            uids = append(self.imap_port, PROVIDER_ADDRESSES[mailbox],
                          [(m.raw, m.internaldate) for m in mine])
            self.uids.update((m.index, uid) for m, uid in zip(mine, uids, strict=True))
        self.latest = max([self.latest, *(m.internaldate for m in messages)])

    def work_units(self, progress: Progress) -> int:
        """Messages waiting on the server, timers due and mail due: what a pass has to do."""
        backlog = len(self.uids) - progress.stored
        return max(backlog, 0) + progress.due_timers + progress.due_outbox

    def calibrate(self, *, now: datetime, batch: Sequence[Planned]) -> None:
        """Time a pass with nothing to do, then a normal pass over `batch`: the kill range."""
        # Twice: the first start-up may still be compiling changed modules.
        idle = min((self.process.once(phase=0, now=now) for _ in range(2)),
                   key=lambda run: run.elapsed)
        self.deliver(batch)
        before = self.progress(now)
        work = self.process.once(phase=0, now=now)
        after = self.progress(now)
        units = len(batch) + (after.sent - before.sent) + (after.fired - before.fired)
        self.idle_seconds = idle.elapsed
        assert idle.ready is not None, "the worker never reached its mailboxes"
        self.ready_seconds = idle.ready
        self.seconds_per_unit = max(work.elapsed - idle.elapsed, 0.0) / max(units, 1)

    def kill_runs(self, kills: int, *, phase: int, clock: Callable[[int], datetime],
                  feed: Sequence[Planned] = ()) -> None:
        """Run the worker until it has been SIGKILLed `kills` times, each at a random instant.

        Run n's clock is `clock(n)` (n counts this call's kills so far). The delay is drawn
        between late in start-up (measured: the first IMAP command of an idle pass) and the
        estimated end of the work the pass has in front of it, so kills land in start-up,
        IMAP fetch, the per-message transactions, IMAP flagging, the timer sweep and SMTP
        dispatch alike. `feed` is delivered a chunk at a time whenever the worker has caught
        up, half of each chunk while the worker runs, so that most kills find work in hand;
        what is left is delivered at the end.
        """
        queue = list(feed)
        chunk = max(2, -(-2 * len(queue) // max(kills, 1)))
        done = attempts = 0
        while done < kills:
            attempts += 1
            assert attempts <= kills * 3, "the worker keeps finishing before the kill"
            later: list[Planned] = []
            if queue and len(self.uids) - self.progress(clock(done)).stored < chunk // 2:
                self.deliver(queue[:chunk // 2])
                later = queue[chunk // 2:chunk]
                del queue[:chunk]
                self.latest = max([self.latest, *(m.internaldate for m in later)])
            now = clock(done)
            before = self.progress(now)
            units = self.work_units(before) + len(later)
            span = self.idle_seconds + self.seconds_per_unit * units
            # Capped: the end of a long pass is reached by the passes after it.
            delay = self.rng.uniform(0.9 * self.ready_seconds, min(span, 2.5 * self.idle_seconds))
            courier = threading.Timer(self.rng.uniform(0.8, 1.2) * self.idle_seconds,
                                      self.deliver, args=(later,))
            courier.start()
            run = self.process.once(phase=phase, now=now, kill_after=delay)
            courier.join()
            self._recalibrate(run, units=units)
            if run.killed:
                log_lines = run.log.read_text(errors="replace").splitlines()
                run.stage = stage_of(log_lines, mailboxes=len(self.mailboxes))
                self.kills.append(Kill(run=run, before=before, after=self.progress(now)))
                done += 1
        self.deliver(queue)

    def _recalibrate(self, run: Run, *, units: int) -> None:
        """Narrow the kill range to what this pass showed of the machine's speed now.

        The calibration passes may have run while the machine was busier than it is now; then
        every delay drawn would outlast the pass. Start-up and an empty pass only ever shrink
        to the fastest seen, so a slow pass never makes the later kills miss.
        """
        if run.ready is not None:
            self.ready_seconds = min(self.ready_seconds, run.ready)
        if not run.killed:
            empty_pass = run.elapsed - self.seconds_per_unit * units
            self.idle_seconds = min(self.idle_seconds,
                                    max(empty_pass, self.ready_seconds / 0.9))

    def settle(self, *, phase: int, now: datetime, max_runs: int = 8) -> int:
        """Unkilled passes until one changes nothing; returns how many ran."""
        previous = self.progress(now)
        for count in range(1, max_runs + 1):
            self.process.once(phase=phase, now=now + timedelta(minutes=count))
            current = self.progress(now + timedelta(minutes=count))
            if current == previous and count > 1:
                return count
            previous = current
        raise AssertionError(f"the worker still had work after {max_runs} passes: stuck?")


class AfterBodiesFetched:
    """A `kill_when` for WorkerProcess.once: `delay` seconds after the first batch of message
    bodies reached the worker, i.e. while it works on the first message(s) of the pass."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.fetched_at: float | None = None

    def __call__(self, log: str) -> bool:
        if self.fetched_at is None:
            found = re.search(r"> b'([A-Z]+\d+) UID FETCH \S+ \(BODY\.PEEK\[\]\)'", log)
            if found and f"< b'{found.group(1)} OK" in log:
                self.fetched_at = time.monotonic()
            return False
        return time.monotonic() - self.fetched_at >= self.delay
