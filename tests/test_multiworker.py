"""Several `run` processes on one PostgreSQL database, killed and restarted while they work.

Three workers share three Dovecot mailboxes and 1,000 complaints. A tenth of the complaints
reached the mailbox nine weeks ago, so their ADR letters fall due as soon as they are opened and
the timer sweep runs in every worker at once. Workers are killed with SIGKILL at random moments
and restarted. At the end there must be exactly 1,000 cases, one acknowledgement Message-ID per
case, one ADR letter per old case, and no timer fired twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import func, select

from tests.harness import PASSWORD, ROOT, Worker, mailbox_for, write_config
from worker.adapters.db import make_engine, session_factory, upgrade
from worker.adapters.db_models import Case, CaseEvent, Outbox
from worker.embedded import EmbeddedSmtpServer, deliver_many

PROVIDERS = ("claranet-soho", "halo-tech-group", "infinity-group")
COMPLAINTS = 1000
OLD_EVERY = 10  # One complaint in ten reached the mailbox nine weeks ago.
WORKERS = 3
KILLS = 8
GIVE_UP_AFTER = 300.0  # seconds of wall-clock time for the whole run
CASE, PURPOSE = "X-Complaints-Worker-Case", "X-Complaints-Worker-Purpose"
ADR_PURPOSE = "adr-letter"


def sent_ids(smtp: EmbeddedSmtpServer, purpose: str) -> set[str]:
    return {m.message["Message-ID"] for m in smtp.received if m.message[PURPOSE] == purpose}


def complaint(n: int, address: str, received: datetime) -> bytes:
    return (f"From: Customer {n} <customer{n}@example.org>\r\nTo: {address}\r\n"
            f"Subject: Complaint {n}: my broadband keeps dropping\r\n"
            f"Date: {format_datetime(received)}\r\nMessage-ID: <mw{n}@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"My connection has dropped every evening for a week ({n}).\r\n").encode()


class Workers:
    """`complaints-worker run` processes, each logging to its own file per incarnation."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--config", str(self.config), "run"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.processes.append(process)
        return process

    def kill_one(self, rng: random.Random) -> None:
        alive = [p for p in self.processes if p.poll() is None]
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.processes.remove(victim)

    def dead(self) -> list[int]:
        return [p.returncode for p in self.processes if p.poll() is not None]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_three_workers_killed_and_restarted(tmp_path: Path, pg_url: str, dovecot,
                                            smtp: EmbeddedSmtpServer):
    mailboxes = [mailbox_for(p) for p in PROVIDERS]
    config = write_config(tmp_path / "config.toml", db_url=pg_url, imap_port=dovecot.port,
                          smtp_port=smtp.port, mailboxes=mailboxes,
                          worker={"poll_interval_seconds": 1, "sweep_interval_seconds": 1,
                                  "global_rate_limit_per_hour": 100_000,
                                  # Claims left by killed workers lapse within the test's time.
                                  "outbox_claim_seconds": 10})
    upgrade(pg_url)
    now = datetime.now(UTC)
    old = {n for n in range(COMPLAINTS) if n % OLD_EVERY == 0}
    mail: dict[str, list[tuple[bytes, datetime]]] = defaultdict(list)
    for n in range(COMPLAINTS):
        box = mailboxes[n % len(mailboxes)]
        received = now - timedelta(weeks=9) if n in old else now - timedelta(minutes=5)
        mail[box.address].append((complaint(n, box.address, received), received))

    workers = Workers(config, tmp_path)
    rng = random.Random(20261121)
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    try:
        for _ in range(WORKERS):
            workers.start()
        # Mail keeps arriving in four waves while the workers run and are killed.
        waves = [{address: messages[i::4] for address, messages in mail.items()} for i in range(4)]
        kills = 0
        started = time.monotonic()
        while True:
            if waves:
                for address, messages in waves.pop(0).items():
                    deliver_many("127.0.0.1", dovecot.port, address, PASSWORD, messages)
            if kills < KILLS:
                time.sleep(rng.uniform(0.3, 2.0))
                workers.kill_one(rng)
                kills += 1
                workers.start()
            else:
                time.sleep(1.0)
            assert not [rc for rc in workers.dead()], "a worker exited on its own"
            with sessions() as session:
                cases = session.scalar(select(func.count()).select_from(Case))
                pending = session.scalar(select(func.count()).select_from(Outbox)
                                         .where(Outbox.status == "pending"))
            acks = sent_ids(smtp, "acknowledgement")
            letters = sent_ids(smtp, ADR_PURPOSE)
            if (not waves and kills == KILLS and cases == COMPLAINTS and not pending
                    and len(acks) == COMPLAINTS and len(letters) >= len(old)):
                break
            assert time.monotonic() - started < GIVE_UP_AFTER, (
                f"not finished: {cases} cases, {len(acks)} acknowledgements, {len(letters)} ADR "
                f"letters, {pending} pending; logs in {tmp_path}")
    finally:
        workers.stop()

    received = list(smtp.received)
    by_case: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for message in received:
        headers = message.message
        by_case[headers[CASE]][headers[PURPOSE]].add(headers["Message-ID"])
    with sessions() as session:
        references = {c.reference: c for c in session.scalars(select(Case))}
        old_cases = {c.reference for c in references.values()
                     if c.first_raised_at < now - timedelta(weeks=8)}
        fired = Counter((e.case_id, e.detail["rule"], e.detail["kind"], e.detail["occurrence"])
                        for e in session.scalars(select(CaseEvent).where(CaseEvent.kind == "timer_fired")))
    engine.dispose()

    assert len(references) == COMPLAINTS, "exactly one case per complaint"
    assert len(old_cases) == len(old)
    for reference in references:
        assert len(by_case[reference]["acknowledgement"]) == 1, reference
        expected_letters = 1 if reference in old_cases else 0
        assert len(by_case[reference][ADR_PURPOSE]) == expected_letters, reference
    twice = {timer: count for timer, count in fired.items() if count > 1}
    assert not twice, f"timers fired more than once: {twice}"
    resent = len(received) - len({m.message["Message-ID"] for m in received})
    print(f"\n{WORKERS} workers, {kills} kills, {workers.started} starts: {len(references)} cases, "
          f"{len(received)} messages at the sink ({resent} re-sent with the same Message-ID), "
          f"{len(old_cases)} ADR letters")


def test_sqlite_says_it_supports_one_worker(tmp_path: Path, smtp: EmbeddedSmtpServer, pymap):
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    config = write_config(tmp_path / "config.toml", db_url=url, imap_port=pymap.port,
                          smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")])
    upgrade(url)
    workers = Workers(config, tmp_path)
    first = workers.start()
    try:
        deadline = time.monotonic() + 30
        log = tmp_path / "worker-1.log"
        while "worker running" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and first.poll() is None, log.read_text()
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "worker", "--config", str(config), "run"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "SQLite supports one worker; use PostgreSQL" in second.stderr
    finally:
        workers.stop()


def test_a_claim_left_by_a_dead_worker_lapses(tmp_path: Path, pg_url: str, pymap,
                                              smtp: EmbeddedSmtpServer):
    at = datetime(2026, 11, 16, 9, tzinfo=UTC)
    address = mailbox_for("claranet-soho").address
    deliver_many("127.0.0.1", pymap.port, address, PASSWORD, [(complaint(1, address, at), at)])
    worker = Worker.create(tmp_path, db_url=pg_url, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    smtp.set_down(True)
    worker.once(at)
    smtp.set_down(False)
    with worker.app.sessions() as session, session.begin():
        # What a worker killed while sending leaves behind: its claim on the acknowledgement.
        row = session.scalars(select(Outbox).where(Outbox.purpose == "acknowledgement")).one()
        row.next_attempt_at, row.claimed_until = at, at + timedelta(minutes=5)
    worker.app.cycle.dispatch_outbox(now=at + timedelta(minutes=1))
    assert sent_ids(smtp, "acknowledgement") == set(), "another worker must not take a live claim"
    worker.app.cycle.dispatch_outbox(now=at + timedelta(minutes=6))
    assert len(sent_ids(smtp, "acknowledgement")) == 1, "the lapsed claim is taken over"
    worker.close()


def test_once_leaves_alone_a_mailbox_another_worker_holds(tmp_path: Path, pg_url: str, pymap,
                                                          smtp: EmbeddedSmtpServer, capsys):
    from worker.adapters.locks import AdvisoryLock
    from worker.cli import main

    at = datetime(2026, 11, 16, 9, tzinfo=UTC)
    boxes = [mailbox_for("claranet-soho"), mailbox_for("halo-tech-group")]
    for box in boxes:
        deliver_many("127.0.0.1", pymap.port, box.address, PASSWORD,
                     [(complaint(1, box.address, at), at)])
    config = write_config(tmp_path / "config.toml", db_url=pg_url, imap_port=pymap.port,
                          smtp_port=smtp.port, mailboxes=boxes)
    upgrade(pg_url)
    engine = make_engine(pg_url)
    held = AdvisoryLock(engine, "mailbox:claranet-soho")  # A `run` elsewhere polls it.
    try:
        assert held.try_hold()
        assert main(["--config", str(config), "once", "--now", at.isoformat()]) == 0
    finally:
        held.release()
        engine.dispose()
    out = capsys.readouterr().out
    assert "claranet-soho: skipped, another worker is polling it" in out
    assert "halo-tech-group: 1 fetched, 1 new case(s)" in out
    assert "claranet-soho: 1 fetched" not in out
