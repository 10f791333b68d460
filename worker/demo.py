"""`complaints-worker demo`: the real worker against embedded IMAP (pymap) and SMTP (aiosmtpd).

Seeds complaints into all five providers' mailboxes and walks them through ten weeks under an
accelerated clock: acknowledgements, staff notifications and replies, automatic updates,
reminders and escalations, a deadlock request, a resolution and a reopening, and the ADR
letters of complaints still open at the threshold. Every email sent is printed and written
to the output folder as an .eml file.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from worker.adapters.db import upgrade
from worker.adapters.db_models import Timer
from worker.bootstrap import App, build_app
from worker.demo_mail import bounce, customer_mail
from worker.errors import WorkerError
from worker.services import queries
from worker.services.cycle import PassResult

if TYPE_CHECKING:
    from worker.embedded import EmbeddedSmtpServer, ReceivedMail

PASSWORD = "demo-password"
START = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # A Monday morning, six weeks before Christmas.

MAILBOXES = [
    # (name, rules, address, stage roles)
    ("claranet", "claranet-soho", "complaints@claranetsoho.co.uk", ("team-leader", "manager")),
    ("halo", "halo-tech-group", "complaints@thehalotechgroup.com",
     ("department-manager", "senior-manager")),
    ("infinity", "infinity-group", "customerservices@infinitygroup.co.uk",
     ("operations-director", "managing-director")),
    ("allcomms", "all-communications", "info@allcommunications.com",
     ("manager", "managing-director")),
    ("ombudsman", "communications-ombudsman", "customer-relations@trustalliancegroup.org",
     ("area-leader", "senior-leader")),
]

COMPLAINTS = [
    ("claranet", "sarah.jones@example.org", "Sarah Jones", "Broadband down for three days",
     "Hello,\n\nMy office broadband (account 44120) has been down since Friday and nobody has\n"
     "called me back. I run a small design studio and we cannot work.\n\nSarah Jones\n"
     "07700 900123\n"),
    ("halo", "raj.patel@example.net", "Raj Patel", "Wrong charges on my bill",
     "Dear Halo,\n\nMy October invoice charges me twice for the same phone line. I have\n"
     "called twice already. Please refund the duplicate charge.\n\nRaj Patel\n"),
    ("infinity", "m.okafor@example.com", "Mary Okafor", "Engineer did not turn up",
     "Hi,\n\nThe engineer booked for Tuesday never arrived and I took the day off work.\n"
     "I want compensation for the lost day.\n\nMary Okafor\n"),
    ("allcomms", "tom.b@example.co.uk", "Tom Brennan", "Number porting failed",
     None),  # HTML-only mail, as some webmail clients send.
    ("ombudsman", "j.wright@example.org", "Jo Wright", "Complaint about how my case was handled",
     "To whom it may concern,\n\nI am unhappy with how my case with you was handled: my\n"
     "evidence was not considered.\n\nJo Wright\n"),
]

ADDRESS_OF = {name: address for name, _, address, _ in MAILBOXES}

HTML_COMPLAINT = (
    "<html><body><p>Hello,</p><p>I asked to move my number to you <b>three weeks ago</b> and "
    "the port has failed twice. My business line is <i>still</i> with the old provider.</p>"
    "<p>Tom Brennan</p></body></html>")


@dataclass(slots=True)
class Story:
    """The demo's world: the worker, its servers, and who sent what."""

    app: App
    smtp: EmbeddedSmtpServer
    deliver: Callable[[str, bytes, datetime], None]
    printed: int = 0

    def sent(self, purpose: str, reference_prefix: str = "") -> list[ReceivedMail]:
        return [m for m in self.smtp.received
                if m.message["X-Complaints-Worker-Purpose"] == purpose
                and (m.message["X-Complaints-Worker-Case"] or "").startswith(reference_prefix)]

    def mail(self, mailbox: str, raw: bytes, at: datetime, what: str) -> None:
        self.deliver(mailbox, raw, at)
        print(f"{at:%a %d %b %H:%M}  <- {what}")

    def once(self, now: datetime) -> None:
        """A full pass, as `complaints-worker once --now` runs it."""
        self.app.cycle.run_pass(now=now)
        self.show()

    def tick(self, now: datetime) -> None:
        """The timer tick of `run`: fire due timers and send; nothing new to fetch."""
        self.app.cycle.fire_and_send(PassResult(), now=now)
        self.show()

    def next_timer(self) -> datetime | None:
        with self.app.sessions() as session:
            return session.scalar(select(func.min(Timer.due_at)).where(Timer.status == "pending"))

    def show(self) -> None:
        for mail in self.smtp.received[self.printed:]:
            m = mail.message
            when = datetime.strptime(m["Date"], "%a, %d %b %Y %H:%M:%S %z")
            print(f"{when:%a %d %b %H:%M}  -> {m['X-Complaints-Worker-Purpose']:<18} "
                  f"{m['X-Complaints-Worker-Case']:<18} to {', '.join(mail.rcpt_tos)}")
        self.printed = len(self.smtp.received)

    def staff_reply(self, mailbox: str, reference: str, text: str, at: datetime,
                    what: str) -> None:
        """A staff member answers the case's first staff notification."""
        note = self.sent("staff-notification", reference)[0]
        address = ADDRESS_OF[mailbox]
        staff = f"staff@{address.rpartition('@')[2]}"
        self.mail(mailbox, customer_mail(
            sender=staff, name="Complaints Team", to=address, subject=f"Re: {note.message['Subject']}",
            at=at, in_reply_to=note.message["Message-ID"], text=text), at, what)

    def customer_reply(self, mailbox: str, purpose: str, prefix: str, sender: str, name: str,
                       text: str, at: datetime, what: str, headers: dict[str, str] | None = None
                       ) -> None:
        """A customer (or their auto-responder) answers the latest email of `purpose` to them."""
        original = self.sent(purpose, prefix)[-1].message
        address = ADDRESS_OF[mailbox]
        self.mail(mailbox, customer_mail(
            sender=sender, name=name, to=address, subject=f"Re: {original['Subject']}", at=at,
            in_reply_to=original["Message-ID"], text=text, headers=headers), at, what)


def run_demo(*, out: Path, workdir: Path, weeks: int = 10) -> int:
    try:
        from worker.embedded import EmbeddedImapServer, EmbeddedSmtpServer, deliver
    except ImportError as exc:
        raise WorkerError("the demo needs the embedded servers: pip install "
                          "'complaints-worker[demo]'") from exc
    # The embedded servers narrate every SMTP command at INFO; the demo prints its own story.
    for noisy in ("mail.log", "pymap", "worker", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    root = Path.cwd()
    if not (root / "rules").is_dir() or not (root / "templates" / "emails").is_dir():
        raise WorkerError("run the demo from the project folder (it reads rules/ and templates/)")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.eml"):
        old.unlink()

    users = {address: PASSWORD for _, _, address, _ in MAILBOXES}
    with EmbeddedImapServer(users) as imap, EmbeddedSmtpServer() as smtp:
        config_file = _write_config(workdir, root, imap.port, smtp.port)
        upgrade(f"sqlite:///{(workdir / 'demo.db').resolve()}")
        app = build_app(config_file)
        def deliver_to(mailbox: str, raw: bytes, at: datetime) -> None:
            deliver("127.0.0.1", imap.port, ADDRESS_OF[mailbox], PASSWORD, raw, internaldate=at)

        story = Story(app=app, smtp=smtp, deliver=deliver_to)
        print(f"The demo clock starts {START:%A %d %B %Y %H:%M} UTC and runs {weeks} weeks.\n"
              f"IMAP (pymap) on 127.0.0.1:{imap.port}, SMTP (aiosmtpd) on 127.0.0.1:{smtp.port}."
              "\n<- mail arriving, -> mail the worker sent (purpose, case, recipients)\n")
        _ten_weeks(story, weeks)
        _write_eml(out, smtp.received)
        _summary(app)
        app.close()
    print(f"\n{len(smtp.received)} message(s) written to {out}/")
    return 0


def _ten_weeks(story: Story, weeks: int) -> None:
    for offset, (mailbox, sender, name, subject, text) in enumerate(COMPLAINTS):
        at = START - timedelta(minutes=30 - offset)
        raw = customer_mail(sender=sender, name=name, to=ADDRESS_OF[mailbox], subject=subject,
                            at=at, text=text, html=HTML_COMPLAINT if text is None else None)
        story.mail(mailbox, raw, at, f"{name} complains to {mailbox}: {subject}")
    story.once(START)
    ref = {prefix: story.sent("acknowledgement", prefix)[0].message["X-Complaints-Worker-Case"]
           for prefix in ("CLR", "HALO", "INF", "ALLC", "CO")}

    day1 = START + timedelta(hours=2)
    story.customer_reply("claranet", "acknowledgement", "CLR", "sarah.jones@example.org",
                         "Sarah Jones", "Thanks. It is still down. Please call me on "
                         "07700 900123.\n", day1, "Sarah replies to her acknowledgement")
    story.customer_reply("halo", "acknowledgement", "HALO", "raj.patel@example.net", "Raj Patel",
                         "I am out of the office until Monday.\n", day1,
                         "Raj's out-of-office answers (recorded, never answered)",
                         headers={"Auto-Submitted": "auto-replied"})
    story.mail("infinity", bounce(
        mta="mx.example.com", to=ADDRESS_OF["infinity"], failed_recipient="m.okafor@example.com",
        original=story.sent("acknowledgement", "INF")[0].raw, at=day1, status="4.2.2",
        diagnostic="452 4.2.2 Mailbox full"), day1,
        "Mary's mailbox is full: a temporary bounce, recorded on her case")
    story.once(day1)
    story.staff_reply("claranet", ref["CLR"], "Hello Sarah,\n\nI am sorry about this. An "
                      "engineer will visit tomorrow morning.\n\nTeam Leader\nClaranet SOHO\n",
                      day1 + timedelta(hours=1), "the Claranet team leader replies from Outlook")
    story.once(day1 + timedelta(hours=1))
    events: dict[datetime, Callable[[datetime], None]] = {
        START + timedelta(days=2, hours=1): lambda at: story.staff_reply(
            "infinity", ref["INF"], "Hello Mary,\n\nWe are sorry the engineer missed the "
            "appointment; we are looking into compensation.\n", at,
            "Infinity's operations team replies"),
        START + timedelta(days=8, hours=2): lambda at: story.customer_reply(
            "allcomms", "acknowledgement", "ALLC", "tom.b@example.co.uk", "Tom Brennan",
            "Nothing has happened. Please send me a deadlock letter so I can go to the "
            "ombudsman.\n", at, "Tom asks for a deadlock letter (flagged to staff)"),
        START + timedelta(days=15, hours=3): lambda at: story.staff_reply(
            "infinity", ref["INF"], "#resolved\n\nHello Mary, we have credited £50 to your "
            "account for the missed appointment.\n", at, "Infinity resolves Mary's complaint"),
        START + timedelta(days=22, hours=2): lambda at: story.customer_reply(
            "infinity", "resolution", "INF", "m.okafor@example.com", "Mary Okafor",
            "I am still not happy: the credit has not appeared on my bill.\n", at,
            "Mary is still unhappy: her complaint reopens"),
    }
    # The clock jumps from one moment that matters to the next: a scheduled event, or the
    # next timer due (as `run`'s timer tick would find it), so every letter goes out on time.
    end = START + timedelta(weeks=weeks)
    now = START + timedelta(hours=3)
    while now < end:
        upcoming = [t for t in (min(events, default=None), story.next_timer()) if t is not None]
        now = min([*upcoming, end])
        if now in events:
            events.pop(now)(now)
            story.once(now)
        else:
            story.tick(now)
        now += timedelta(seconds=1)


def _write_eml(out: Path, received: list[ReceivedMail]) -> None:
    for index, mail in enumerate(received, start=1):
        message = message_from_bytes(mail.raw, policy=default_policy)
        name = f"{index:03d}-{message['X-Complaints-Worker-Purpose']}-" \
               f"{message['X-Complaints-Worker-Case']}.eml"
        (out / name).write_bytes(mail.raw)


def _summary(app: App) -> None:
    with app.sessions() as session:
        cases = queries.list_cases(session)
        print("\n== Cases after the story ==")
        for case in cases:
            detail = queries.show_case(session, case["reference"]) or {}
            sent = [m.get("purpose") for m in detail.get("messages", [])
                    if m["direction"] == "out"]
            breaches = sum(1 for e in detail.get("events", []) if e["kind"] == "breach")
            print(f"  {case['reference']:<18} {case['status']:<9} {case['provider']:<26} "
                  f"{len(sent)} sent ({sent.count('update')} updates), {breaches} breach(es), "
                  f"ADR letter: {'yes' if 'adr-letter' in sent else 'no'}")
        print("  (run `complaints-worker --config .demo/config.toml cases show REF` for any "
              "case's full audit trail)")


def _write_config(workdir: Path, root: Path, imap_port: int, smtp_port: int) -> Path:
    lines = [
        "[worker]", "poll_interval_seconds = 5", "",
        "[database]", f'url = "sqlite:///{(workdir / "demo.db").resolve()}"', "",
        "[paths]", f'rules = "{root / "rules"}"', f'templates = "{root / "templates" / "emails"}"',
        "", "[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}", 'security = "none"', "",
    ]
    for name, rules, address, roles in MAILBOXES:
        domain = address.rpartition("@")[2]
        role_table = ", ".join(f'"{role}" = ["{role}@{domain}"]' for role in roles)
        lines += [
            "[[mailboxes]]", f'name = "{name}"', f'rules = "{rules}"', f'address = "{address}"',
            'host = "127.0.0.1"', f"port = {imap_port}", 'security = "none"',
            f'password = "{PASSWORD}"', 'processed_folder = "Processed"',
            f'staff = ["staff@{domain}"]', f'notify = ["complaints-team@{domain}"]',
            f"roles = {{ {role_table} }}", "",
        ]
    path = workdir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
