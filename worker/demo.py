"""`complaints-worker demo`: the real worker against embedded IMAP (pymap) and SMTP (aiosmtpd) servers.

Seeds complaints into all five providers' mailboxes, runs full passes under a fixed clock,
prints every email sent and writes each one to the output folder as an .eml file.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING

from worker.adapters.db import upgrade
from worker.bootstrap import App, build_app
from worker.demo_mail import bounce, customer_mail
from worker.errors import WorkerError
from worker.services import queries

if TYPE_CHECKING:
    from worker.embedded import EmbeddedSmtpServer, ReceivedMail

PASSWORD = "demo-password"
START = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # A Monday morning.

MAILBOXES = [
    # (name, rules, address)
    ("claranet", "claranet-soho", "complaints@claranetsoho.co.uk"),
    ("halo", "halo-tech-group", "complaints@thehalotechgroup.com"),
    ("infinity", "infinity-group", "customerservices@infinitygroup.co.uk"),
    ("allcomms", "all-communications", "info@allcommunications.com"),
    ("ombudsman", "communications-ombudsman", "customer-relations@trustalliancegroup.org"),
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

HTML_COMPLAINT = (
    "<html><body><p>Hello,</p><p>I asked to move my number to you <b>three weeks ago</b> and "
    "the port has failed twice. My business line is <i>still</i> with the old provider.</p>"
    "<p>Tom Brennan</p></body></html>")


def run_demo(*, out: Path, workdir: Path) -> int:
    try:
        from worker.embedded import EmbeddedImapServer, EmbeddedSmtpServer, deliver
    except ImportError as exc:
        raise WorkerError("the demo needs the embedded servers: pip install "
                          "'complaints-worker[demo]'") from exc
    # The embedded servers narrate every SMTP command at INFO; the demo prints its own story.
    for noisy in ("mail.log", "pymap"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root = Path.cwd()
    if not (root / "rules").is_dir() or not (root / "templates" / "emails").is_dir():
        raise WorkerError("run the demo from the project folder (it reads rules/ and templates/)")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.eml"):
        old.unlink()

    users = {address: PASSWORD for _, _, address in MAILBOXES}
    with EmbeddedImapServer(users) as imap, EmbeddedSmtpServer() as smtp:
        config_file = _write_config(workdir, root, imap.port, smtp.port)
        upgrade(f"sqlite:///{(workdir / 'demo.db').resolve()}")
        app = build_app(config_file)
        address_of = {name: address for name, _, address in MAILBOXES}

        def deliver_to(mailbox: str, raw: bytes, at: datetime) -> None:
            deliver("127.0.0.1", imap.port, address_of[mailbox], PASSWORD, raw, internaldate=at)

        print(f"Demo clock starts {START:%A %d %B %Y %H:%M} UTC; IMAP on :{imap.port}, "
              f"SMTP on :{smtp.port}\n")
        print("== Customers write in ==")
        for offset, (mailbox, sender, name, subject, text) in enumerate(COMPLAINTS):
            at = START - timedelta(minutes=30 - offset)
            raw = customer_mail(sender=sender, name=name, to=address_of[mailbox], subject=subject,
                                at=at, text=text, html=HTML_COMPLAINT if text is None else None)
            deliver_to(mailbox, raw, at)
            print(f"  {at:%H:%M}  {sender} -> {mailbox}: {subject}")

        _pass(app, START, smtp)
        acks = {m.message["X-Complaints-Worker-Case"]: m for m in smtp.received}
        claranet_ref = next(ref for ref in acks if ref.startswith("CLR-"))
        halo_ref = next(ref for ref in acks if ref.startswith("HALO-"))
        infinity_ref = next(ref for ref in acks if ref.startswith("INF-"))

        later = START + timedelta(hours=2)
        print("\n== Replies, automatic mail and a stranger arrive ==")
        claranet_ack = acks[claranet_ref].message
        deliver_to("claranet", customer_mail(
            sender="sarah.jones@example.org", name="Sarah Jones", to=address_of["claranet"],
            subject=f"Re: {claranet_ack['Subject']}", at=later, in_reply_to=claranet_ack["Message-ID"],
            text="Thanks. It is still down this morning. Please call me on 07700 900123.\n"), later)
        print(f"  {later:%H:%M}  Sarah Jones replies to her acknowledgement ({claranet_ref})")
        halo_ack = acks[halo_ref].message
        deliver_to("halo", customer_mail(
            sender="raj.patel@example.net", name="Raj Patel", to=address_of["halo"],
            subject=f"Out of Office: {halo_ack['Subject']}", at=later,
            in_reply_to=halo_ack["Message-ID"], headers={"Auto-Submitted": "auto-replied"},
            text="I am out of the office until Monday with limited access to email.\n"), later)
        print(f"  {later:%H:%M}  Raj Patel's out-of-office answers his acknowledgement")
        deliver_to("infinity", bounce(
            mta="mx.example.com", to=address_of["infinity"], failed_recipient="m.okafor@example.com",
            original=acks[infinity_ref].raw, at=later), later)
        print(f"  {later:%H:%M}  a mail server bounces a message (Undelivered Mail Returned)")
        deliver_to("claranet", customer_mail(
            sender="someone.else@example.com", name="Alex Smith", to=address_of["claranet"],
            subject=f"[{claranet_ref}] My broadband is down too", at=later,
            text="I saw this reference on a forum. My line is also down.\n"), later)
        print(f"  {later:%H:%M}  a stranger quotes [{claranet_ref}] in a new mail")

        _pass(app, later + timedelta(minutes=5), smtp, already=len(smtp.received))
        _write_eml(out, smtp.received)
        _summary(app)
        app.close()
    print(f"\n{len(smtp.received)} message(s) written to {out}/")
    return 0


def _pass(app: App, now: datetime, smtp: EmbeddedSmtpServer, already: int = 0) -> None:
    result = app.cycle.run_pass(now=now)
    print(f"\n== Worker pass at {now:%H:%M} ==")
    for poll in result.polls:
        if poll.fetched:
            print(f"  {poll.mailbox}: {poll.fetched} fetched, {poll.cases_opened} new case(s), "
                  f"{poll.joined} joined a case, {poll.quarantined} quarantined")
    sent = smtp.received[already:]
    print(f"  sent {len(sent)} email(s):")
    for mail in sent:
        m = mail.message
        print(f"    {m['Date']}  {m['X-Complaints-Worker-Purpose']:<16} "
              f"{m['X-Complaints-Worker-Case']:<18} to {', '.join(mail.rcpt_tos)}")
        print(f"        Subject: {m['Subject']}")


def _write_eml(out: Path, received: list[ReceivedMail]) -> None:
    for index, mail in enumerate(received, start=1):
        message = message_from_bytes(mail.raw, policy=default_policy)
        name = f"{index:03d}-{message['X-Complaints-Worker-Purpose']}-" \
               f"{message['X-Complaints-Worker-Case']}.eml"
        (out / name).write_bytes(mail.raw)


def _summary(app: App) -> None:
    with app.sessions() as session:
        cases = queries.list_cases(session)
        state = queries.status(session, app.config)
        print("\n== Cases ==")
        for case in cases:
            detail = queries.show_case(session, case["reference"]) or {}
            kinds = [e["kind"] for e in detail.get("events", [])]
            print(f"  {case['reference']:<18} {case['provider']:<26} {case['customer']:<28} "
                  f"events: {', '.join(kinds)}")
        print("\n== Quarantine (kept with a reason, never dropped) ==")
        for row in state["quarantine"]["latest"]:
            print(f"  {row['mailbox']} uid {row['uid']}: {row['reason']}")


def _write_config(workdir: Path, root: Path, imap_port: int, smtp_port: int) -> Path:
    lines = [
        "[worker]", "poll_interval_seconds = 5", "",
        "[database]", f'url = "sqlite:///{(workdir / "demo.db").resolve()}"', "",
        "[paths]", f'rules = "{root / "rules"}"', f'templates = "{root / "templates" / "emails"}"',
        "", "[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}", 'security = "none"', "",
    ]
    for name, rules, address in MAILBOXES:
        domain = address.rpartition("@")[2]
        lines += [
            "[[mailboxes]]", f'name = "{name}"', f'rules = "{rules}"', f'address = "{address}"',
            'host = "127.0.0.1"', f"port = {imap_port}", 'security = "none"',
            f'password = "{PASSWORD}"', 'processed_folder = "Processed"',
            f'staff = ["team-leader@{domain}"]', f'notify = ["complaints-team@{domain}"]', "",
        ]
    path = workdir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
