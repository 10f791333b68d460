"""Floor benchmark: the least work any worker on this stack must do per message, beside ours.

    .venv/bin/python bench/floor_bench.py [--count 5000] [--skip-ours]

The ingest target (600 msg/s) is for this machine, so this measures what the machine allows. The
"floor" is a deliberately bare pipeline on the same stack, the same Dovecot, the same sink and
the same mail set as the ingest benchmark: imapclient fetches in batches of 100, the standard
library parses each message (compat32, the cheapest policy) for its header and first text part,
sqlite3 stores it (WAL, `synchronous=FULL`, one commit a batch), an acknowledgement is composed
with an f-string and queued in the same transaction, the batch is moved to `Processed`, and the
outbox is then sent through aiosmtplib on two connections, as ours, each mail marked sent by
its own commit. It makes the
decisions a worker must make with header tests only: no classification evidence, threading,
timers, rules, templates, quoted-text extraction or HTML. With notifications on, every
non-automated message is also forwarded to staff with the original attached as message/rfc822
(no re-encoding, the cheapest way to carry its attachments). A run counts only if the sink got
one acknowledgement for each first complaint of the manifest and no other.

Everything the floor does, a worker with our guarantees must do too, so ours can only approach
it: the ratio says how much of our cost is the stack and the machine, and how much our own work.
The floor runs first, then ours (`once`, as the ingest benchmark runs it) unless --skip-ours,
each with acknowledgements only and with notifications.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import time
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import ingest_bench
from benchlib import MailServer, Sink, Timed

BATCH = 100
CONNECTIONS = 2  # our worker's default ([smtp] connections)
SENDER = benchlib.MAIL_USER
AUTOMATED_FROM = ("mailer-daemon", "postmaster")
PHASES = "floor phases (wall): "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="messages (default 5000)")
    parser.add_argument("--skip-ours", action="store_true", help="run the floor only")
    parser.add_argument("--worker", nargs=4, metavar=("IMAP_PORT", "SMTP_PORT", "DB", "NOTIFY"),
                        help=argparse.SUPPRESS)  # the floor pipeline itself, in its own process
    args = parser.parse_args(argv)
    if args.worker:
        imap_port, smtp_port, db, notify = args.worker
        return floor_pipeline(int(imap_port), int(smtp_port), Path(db), notify=notify == "1")
    recipe = benchlib.require_shared("floor benchmark")
    if recipe is None:
        return 0
    work = benchlib.begin("floor", "a bare pipeline on the same stack and mail set, and ours")
    server = MailServer(recipe, work / "dovecot")
    rows: list[tuple[str, int, Timed, int]] = []
    problems: list[str] = []
    try:
        mailset, manifest = benchlib.generate_mail(recipe, args.count, work)
        # What every worker must acknowledge: each first complaint (ours does, less the few
        # its per-recipient limit holds back).
        first = {m["message_id"] for m in manifest if m["kind"] in ("new", "attachment")}
        server.start()
        for notify in (False, True):
            variant = "with notifications" if notify else "acknowledgements only"
            server.load(mailset, len(manifest))
            name = "floor-" + ("notify" if notify else "acks")
            sink = Sink(benchlib.LIGHT_SINK, work / f"sink-{name}.jsonl")
            print(f"running     the floor over {len(manifest)} messages, {variant} ...", flush=True)
            with sink:
                timed = benchlib.run_timed(
                    [sys.executable, __file__, "--worker", str(server.port), str(sink.port),
                     str(work / f"{name}.db"), "1" if notify else "0"], log=work / f"{name}.log")
            records = sink.records()
            sent = len(records)
            acked = [r.get("in-reply-to") for r in records
                     if benchlib.NOTIFY not in r.get("rcpt_tos", [])]
            if sorted(acked) != sorted(first):
                problems.append(f"floor {variant}: {len(acked)} acknowledgements, "
                                f"{len(set(acked) & first)} of the {len(first)} first complaints")
            log_lines = (work / f"{name}.log").read_text(errors="replace").splitlines()
            print("            " + next((line for line in log_lines if line.startswith(PHASES)),
                                        "no phases reported"))
            left = server.count()
            if timed.returncode != 0 or left:
                problems.append(f"floor {variant}: exit {timed.returncode}, INBOX left {left}; "
                                f"see {work / (name + '.log')}")
            rows.append((f"floor, {variant}", len(manifest), timed, sent))
            if args.skip_ours:
                continue
            outcome = ingest_bench.run_ours(
                server, benchlib.LIGHT_SINK, work, f"SQLite {variant}",
                benchlib.sqlite_url(work / f"ours-{int(notify)}.db"), manifest, mailset,
                notify=notify)
            problems.extend(f"ours {variant}: {p}" for p in outcome.problems)
            total = Timed(returncode=0, wall_s=outcome.wall_s, max_rss_kb=int(outcome.rss_mib * 1024),
                          user_s=outcome.cpu_s, sys_s=0.0)
            rows.append((f"ours, {variant}", len(manifest), total,
                         outcome.sink_acks + outcome.sink_notifications))
    finally:
        server.stop()
        if problems:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(rows, problems)
    return 1 if problems else 0


def report(rows: list[tuple[str, int, Timed, int]], problems: list[str]) -> None:
    print(f"\n  {'run':<36} {'wall s':>8} {'msg/s':>8} {'CPU s':>7} {'peak RSS':>10} {'mails sent':>11}")
    for label, count, timed, sent in rows:
        print(f"  {label:<36} {timed.wall_s:>8.2f} {count / timed.wall_s:>8.1f} "
              f"{timed.user_s + timed.sys_s:>7.2f} {timed.rss_mib:>7.1f} MiB {sent:>11}")
    rates = {label: count / timed.wall_s for label, count, timed, _ in rows}
    target = ingest_bench.TARGET_PER_SECOND
    for variant in ("acknowledgements only", "with notifications"):
        floor, ours = rates.get(f"floor, {variant}"), rates.get(f"ours, {variant}")
        if floor:
            print(f"  {variant}: the floor {'meets' if floor >= target else 'is BELOW'} the "
                  f"{target} msg/s target" + (f"; ours is {ours / floor:.0%} of its rate" if ours
                                              else ""))
    for problem in problems:
        print(f"  PROBLEM: {problem}")


# ---------------------------------------------------------------------------- the floor itself


def floor_pipeline(imap_port: int, smtp_port: int, db: Path, *, notify: bool) -> int:
    from imapclient import IMAPClient

    phases = dict.fromkeys(("fetch", "store", "move", "send"), 0.0)
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[phase] += now - clock
        clock = now

    store = sqlite3.connect(db, isolation_level=None)
    store.execute("PRAGMA journal_mode=WAL")
    store.execute("PRAGMA synchronous=FULL")
    store.execute("CREATE TABLE message (uid INTEGER PRIMARY KEY, message_id TEXT, raw BLOB)")
    store.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, recipient TEXT, data BLOB, "
                  "sent INTEGER NOT NULL DEFAULT 0)")
    with IMAPClient("127.0.0.1", port=imap_port, ssl=False) as client:
        client.login(benchlib.MAIL_USER, benchlib.MAIL_PASSWORD)
        if not client.folder_exists("Processed"):
            client.create_folder("Processed")
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))
        lap("fetch")
        for start in range(0, len(uids), BATCH):
            batch = uids[start:start + BATCH]
            fetched = client.fetch(batch, ["BODY.PEEK[]"])
            lap("fetch")
            store.execute("BEGIN")
            for uid in batch:
                intake(store, uid, fetched[uid][b"BODY[]"], notify=notify)
            store.execute("COMMIT")
            lap("store")
            client.move(batch, "Processed")
            lap("move")
    asyncio.run(send_outbox(store, smtp_port))
    lap("send")
    print(PHASES + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items()))
    return 0


def intake(store: sqlite3.Connection, uid: int, raw: bytes, *, notify: bool) -> None:
    message = message_from_bytes(raw, policy=compat32)
    message_id = str(message.get("Message-ID", "")).strip()
    sender = parseaddr(str(message.get("From", "")))[1]
    store.execute("INSERT INTO message VALUES (?, ?, ?)", (uid, message_id, raw))
    if automated(message, sender):
        return
    text = first_text(message)
    if not (message.get("In-Reply-To") or message.get("References")):
        queue(store, sender, acknowledgement(message, sender, message_id))
    if notify:
        queue(store, benchlib.NOTIFY, notification(message, sender, text, raw))


def automated(message: Message, sender: str) -> bool:
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    return (auto != "no" or message.get_content_type() == "multipart/report"
            or str(message.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list")
            or any(name in sender.lower() for name in AUTOMATED_FROM))


def first_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                try:
                    return payload.decode(part.get_content_charset() or "utf-8", "replace")
                except LookupError:  # an unknown charset
                    return payload.decode("utf-8", "replace")
    return ""


def head(to: str, subject: str, purpose: str, extra: str = "") -> str:
    return (f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {formatdate()}\r\n"
            f"Message-ID: {make_msgid(domain='example.com')}\r\nAuto-Submitted: auto-replied\r\n"
            f"X-Complaints-Worker-Purpose: {purpose}\r\nMIME-Version: 1.0\r\n{extra}")


def acknowledgement(message: Message, sender: str, message_id: str) -> bytes:
    subject = " ".join(str(message.get("Subject", "")).split())
    body = ("Thank you for your complaint, which we received today. Its reference is CW-0000.\r\n"
            "We will reply within five working days. If it is not resolved within eight weeks\r\n"
            "you may take it to the ombudsman.\r\n")
    return (head(sender, f"Re: {subject} [CW-0000]", "acknowledgement",
                 f"In-Reply-To: {message_id}\r\nReferences: {message_id}\r\n")
            + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body
            ).encode("utf-8", "surrogateescape")


def notification(message: Message, sender: str, text: str, raw: bytes) -> bytes:
    subject = " ".join(str(message.get("Subject", "")).split())
    boundary = "=_floor_" + make_msgid().strip("<>").replace("@", "_")
    return (head(benchlib.NOTIFY, f"[CW-0000] {subject}", "staff-notification",
                 f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n')
            + f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
              f"Content-Transfer-Encoding: 8bit\r\n\r\nFrom {sender}:\r\n\r\n{text}\r\n"
              f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").encode(
                  "utf-8", "surrogateescape") + raw + f"\r\n--{boundary}--\r\n".encode()


def queue(store: sqlite3.Connection, recipient: str, data: bytes) -> None:
    store.execute("INSERT INTO outbox (recipient, data) VALUES (?, ?)", (recipient, data))


async def send_outbox(store: sqlite3.Connection, smtp_port: int) -> None:
    """Over CONNECTIONS connections at once, as our worker sends by default, so that one
    connection's mail is prepared while the sink handles another's."""
    await asyncio.gather(*(send_share(store, smtp_port, share) for share in range(CONNECTIONS)))


async def send_share(store: sqlite3.Connection, smtp_port: int, share: int) -> None:
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False)
    await smtp.connect()
    try:
        last = 0
        while rows := store.execute(
                "SELECT id, recipient, data FROM outbox WHERE id > ? AND id % ? = ? "
                "ORDER BY id LIMIT 100", (last, CONNECTIONS, share)).fetchall():
            for row_id, recipient, data in rows:
                await smtp.sendmail(SENDER, [recipient], data)
                # Its own commit (and sync) each: a crash re-sends at most the mail in hand.
                store.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))
            last = rows[-1][0]
    finally:
        await smtp.quit()


if __name__ == "__main__":
    sys.exit(main())
