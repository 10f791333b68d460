"""Timers at scale: a million stored cases, 100,000 of them open, and the worker's timer sweep.

    .venv/bin/python bench/scale_bench.py [--cases 1000000] [--due 10000] [--pg] [--dispatch]

Generates the cases straight into a fresh database (SQLite file; PostgreSQL too with --pg), in
bulk (SQLAlchemy Core executemany on SQLite, COPY on PostgreSQL), on the current schema (Alembic
head). Every case is a claranet-soho case with its customer party and the four timers the worker
plans at intake (initial response and its reminder, daily update, ADR letter), in the states a
real history leaves them: a tenth of the cases open, their reminder fired, initial response met,
daily update and ADR letter pending in the future; the rest resolved weeks to years ago, their
timers met or cancelled. Each case also has its acknowledgement in the outbox, sent (with a short
stand-in for the message bytes). No inbound mail or audit rows are generated.

Then, in a fresh process (so its peak RSS is the worker's, not the generator's), built from a
config by worker.bootstrap.build_app as `complaints-worker run` builds it:
- the timer tick with nothing due (Cycle.fire_and_send: sweep, outbox dispatch, late-mail check)
  and the bare TimerSweep.sweep, each timed several times;
- then DUE pending timers (daily updates and ADR letters of open cases, spread over the table)
  are made due, and the sweep is timed until it has fired them all: letters rendered, composed
  and queued in the outbox. With --dispatch the outbox is then also sent to an aiosmtpd sink
  process and timed; without it nothing is sent.
Targets: an empty sweep under 50 ms and peak RSS under 200 MB at a million cases. The clock is
fixed (NOW below), so every run plans the same timers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import profiling

from tests.servers import free_port

NOW = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)  # a Monday; the sweep's clock throughout
TARGET_SWEEP_MS = 50
TARGET_RSS_MB = 200
REPEATS = 7
CHUNK = 20_000
OPEN_SHARE = 10  # one case in ten is open


# ---------------------------------------------------------------------------- generation


def case_rows(count: int) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Rows per table of each case, for case ids 1..count, deterministic."""
    for case_id in range(1, count + 1):
        is_open = case_id % OPEN_SHARE == 0
        if is_open:  # received in the last eight weeks, so its ADR letter is still ahead
            received = NOW - timedelta(days=1 + case_id * 7919 % 54, minutes=case_id % 600)
        else:  # resolved, received up to three years ago
            received = NOW - timedelta(days=60 + case_id * 7919 % 1000, minutes=case_id % 600)
        address = f"customer{case_id}@example.net"
        reference = f"CLR-{received.year}-{case_id:07d}"
        case = {
            "id": case_id, "reference": reference,
            "provider_id": "claranet-soho", "mailbox": "bench",
            "status": "open" if is_open else "resolved",
            "subject": f"Complaint about my broadband service, order {100000 + case_id}",
            "customer_address": address, "customer_name": f"Customer {case_id}",
            "first_raised_at": received, "created_at": received, "stage": 1,
            "resolved_at": None if is_open else received + timedelta(days=10),
        }
        party = {"case_id": case_id, "address": address, "name": f"Customer {case_id}",
                 "role": "customer", "added_at": received}
        yield {"cases": [case], "case_party": [party], "timer": timers_for(case_id, received, is_open),
               "outbox": [acknowledgement(case_id, reference, address, received)],
               "outbox_mail": [{"outbox_id": case_id, "raw": b"Subject: [" + reference.encode()
                                + b"] Your complaint\r\n\r\nReceived.\r\n"}]}


def acknowledgement(case_id: int, reference: str, address: str, received: datetime) -> dict[str, Any]:
    """The case's acknowledgement, long sent (its bytes, in outbox_mail, a short stand-in for
    the real message)."""
    return {"id": case_id, "idempotency_key": f"ack:{reference}",
            "message_id": f"<ack{case_id}@example.com>",
            "case_id": case_id, "mailbox": "bench", "purpose": "acknowledgement",
            "envelope_from": benchlib.MAIL_USER, "recipients": [address],
            "status": "sent", "attempts": 1, "next_attempt_at": received, "created_at": received,
            "sent_at": received + timedelta(minutes=1), "limited_to": address}


def timers_for(case_id: int, received: datetime, is_open: bool) -> list[dict[str, Any]]:
    """The four intake timers of a claranet-soho case (see worker.core.replan.intake_timers)."""
    def timer(obligation: str, kind: str, due: datetime, status: str, *, occurrence: int = 1,
              deadline: datetime | None = None) -> dict[str, Any]:
        fired = due if status in ("fired", "met") else None
        return {"case_id": case_id, "obligation_id": obligation, "kind": kind,
                "occurrence": occurrence, "start_at": received, "due_at": due,
                "deadline_at": deadline, "status": status, "fired_at": fired, "promised": True,
                "planned_at": received}

    adr_due = received + timedelta(weeks=8)
    if is_open:
        # Daily updates went out every day so far; the next one is due this evening.
        days = (NOW - received).days
        update_due = NOW.replace(hour=16, minute=30)
        return [
            timer("initial_response", "reminder", received + timedelta(hours=6), "fired"),
            timer("initial_response", "due", received + timedelta(days=1), "met"),
            timer("daily_update", "due", update_due, "pending", occurrence=days + 1,
                  deadline=update_due + timedelta(minutes=30)),
            timer("adr_letter", "due", adr_due, "pending"),
        ]
    return [
        timer("initial_response", "reminder", received + timedelta(hours=6), "fired"),
        timer("initial_response", "due", received + timedelta(days=1), "met"),
        timer("daily_update", "due", received + timedelta(days=10), "met", occurrence=9,
              deadline=received + timedelta(days=10, minutes=30)),
        timer("adr_letter", "due", adr_due, "cancelled"),
    ]


def generate(db_url: str, count: int) -> dict[str, int]:
    """Insert `count` cases with parties and timers; returns row counts per table."""
    from sqlalchemy import create_engine, text

    from worker.adapters.db_models import Base

    tables = {name: Base.metadata.tables[name] for name in ("cases", "case_party", "timer", "outbox",
                                                          "outbox_mail")}
    counts = dict.fromkeys(tables, 0)
    engine = create_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as connection:
            if not postgres:
                # Bulk load only: the worker's own connections use WAL and synchronous=FULL.
                connection.exec_driver_sql("PRAGMA synchronous=OFF")
            buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}

            def flush() -> None:
                for name, rows in buffers.items():
                    if rows:
                        if postgres:
                            _copy(connection, name, rows)
                        else:
                            connection.execute(tables[name].insert(), rows)
                        counts[name] += len(rows)
                        rows.clear()

            for rows in case_rows(count):
                for name, table_rows in rows.items():
                    # Only the columns this schema has (limited_to, say, is recent).
                    buffers[name].extend({k: v for k, v in row.items() if k in tables[name].c}
                                         for row in table_rows)
                if len(buffers["cases"]) >= CHUNK:
                    flush()
            flush()
            if postgres:
                for name in ("cases", "case_party", "timer", "outbox"):
                    # Explicit ids were given: move the sequences past them.
                    connection.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"))
        if postgres:
            # What autovacuum does after a bulk load in production: statistics, visibility map.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()
    return counts


def _copy(connection: Any, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(v) if isinstance(v, list | dict) else v
                            for v in (row[c] for c in columns)])


# ---------------------------------------------------------------------------- measuring (child)


def measure(config: Path, due: int, dispatch: bool) -> dict[str, Any]:
    """Runs in a fresh process: the worker's timer work on the generated database."""
    from sqlalchemy import func, select, update

    from worker.adapters.db_models import Outbox, Timer
    from worker.bootstrap import build_app
    from worker.services.cycle import PassResult

    started = time.perf_counter()
    app = build_app(config)
    out: dict[str, Any] = {"build_s": time.perf_counter() - started}
    sweep = app.cycle.sweep
    assert sweep is not None
    empty_sweeps, empty_ticks = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fired = sweep.sweep(now=NOW)
        empty_sweeps.append(time.perf_counter() - started)
        assert fired == 0, f"{fired} timers were due in the 'nothing due' sweep"
        started = time.perf_counter()
        app.cycle.fire_and_send(PassResult(), now=NOW)
        empty_ticks.append(time.perf_counter() - started)
    out.update(empty_sweep_s=empty_sweeps, empty_tick_s=empty_ticks, rss_empty_kb=_peak_rss_kb())

    with app.sessions.begin() as session:  # not timed: the timers come due
        pending = session.scalar(select(func.count()).select_from(Timer)
                                 .where(Timer.status == "pending")) or 0
        step = max(1, pending // max(due, 1))
        # Pending timers' ids repeat in a pattern of period 4 * OPEN_SHARE (four timers a case);
        # a step sharing no factor with it picks daily updates and ADR letters alike.
        while math.gcd(step, 4 * OPEN_SHARE) != 1:
            step -= 1
        chosen = (select(Timer.id).where(Timer.status == "pending", Timer.id % step == 0)
                  .order_by(Timer.id).limit(due).scalar_subquery())
        session.execute(update(Timer).where(Timer.id.in_(chosen))
                        .values(due_at=NOW - timedelta(minutes=1)))
        kinds = dict(session.execute(
            select(Timer.obligation_id, func.count()).where(Timer.status == "pending",
                                                            Timer.due_at <= NOW)
            .group_by(Timer.obligation_id)).all())
    out.update(pending=pending, made_due=sum(kinds.values()), due_kinds=kinds)

    started = time.perf_counter()
    fired_total, sweeps = 0, 0
    while fired := sweep.sweep(now=NOW):
        fired_total += fired
        sweeps += 1
    out.update(process_s=time.perf_counter() - started, fired=fired_total, sweep_calls=sweeps + 1)
    with app.sessions() as session:
        out["outbox"] = {f"{p} {s}": n for p, s, n in session.execute(
            select(Outbox.purpose, Outbox.status, func.count()).group_by(Outbox.purpose,
                                                                         Outbox.status))}
    if dispatch:
        started = time.perf_counter()
        sent = 0
        while True:  # each dispatch sends a bounded batch
            batch = app.cycle.dispatch_outbox(now=NOW).sent
            sent += batch
            if not batch:
                break
        out.update(dispatch_s=time.perf_counter() - started, sent=sent)
    out["rss_kb"] = _peak_rss_kb()
    app.close()
    return out


def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- orchestration


def run_database(label: str, db_url: str, work: Path, args: argparse.Namespace) -> None:
    name = benchlib.slug(label)
    with contextlib.ExitStack() as stack:
        smtp_port = free_port()
        if args.dispatch:
            stack.enter_context(smtp_sink(smtp_port))
        config = benchlib.worker_config(work / f"{name}.toml", db_url=db_url, imap_port=1,
                                        smtp_port=smtp_port, worker=_global_limit())
        benchlib.migrate(config)
        print(f"\n{label}: generating {args.cases:,} cases ({args.cases // OPEN_SHARE:,} open) ...",
              flush=True)
        started = time.perf_counter()
        counts = generate(db_url, args.cases)
        took = time.perf_counter() - started
        rows = sum(counts.values())
        size = ""
        if db_url.startswith("sqlite:///"):
            size = f", file {Path(db_url.removeprefix('sqlite:///')).stat().st_size / 2**20:,.0f} MiB"
        print(f"  generated {', '.join(f'{n:,} {t}' for t, n in counts.items())} in {took:.1f} s "
              f"({rows / took:,.0f} rows/s{size})")
        log = work / f"measure-{name}.log"
        prefix: list[str] = []
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            stacks = args.profile / f"scale-{name}-{args.cases}.txt"
            prefix = profiling.pyspy_prefix(stacks) or []
            print(f"  profiling the measuring process into {stacks}" if prefix else
                  "  py-spy not found: `.venv/bin/pip install py-spy` (not a project dependency)")
        timed = benchlib.run_timed(
            [*prefix, sys.executable, str(Path(__file__).resolve()), "--measure", str(config),
             "--due", str(args.due), *(["--dispatch"] if args.dispatch else [])], log=log)
        lines = log.read_text(errors="replace").splitlines()
        found = [line for line in lines if line.startswith("{")]
        if timed.returncode != 0 or not found:
            print(f"  measuring failed ({timed.returncode}):\n    " + "\n    ".join(lines[-15:]))
            return
        report(json.loads(found[-1]), timed, args)
        if prefix:
            stacks.with_suffix(".summary").write_text("\n".join(profiling.summarise(stacks)) + "\n")
            print(f"  profile summary: {stacks.with_suffix('.summary')} (figures above include the profiler)")


def _global_limit() -> dict[str, int]:
    """Room for the letters' dispatch under the global hourly limit, where the worker has one."""
    from worker.config import WorkerSettings

    fields = getattr(WorkerSettings, "__dataclass_fields__", {})
    return {"global_rate_limit_per_hour": 1_000_000} if "global_rate_limit_per_hour" in fields else {}


@contextlib.contextmanager
def smtp_sink(port: int) -> Iterator[None]:
    """aiosmtpd's own discarding sink, in its own process."""
    proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                             "-c", "aiosmtpd.handlers.Sink"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        benchlib.wait_for_port(port, proc)
        yield
    finally:
        benchlib.terminate(proc, 10)


def report(m: dict[str, Any], timed: benchlib.Timed, args: argparse.Namespace) -> None:
    sweeps = [s * 1000 for s in m["empty_sweep_s"]]
    ticks = [s * 1000 for s in m["empty_tick_s"]]
    print(f"  app built in {m['build_s']:.2f} s; {m['pending']:,} pending timers")
    print(f"  empty sweep     median {median(sweeps):.1f} ms, min {min(sweeps):.1f}, "
          f"max {max(sweeps):.1f} ms over {len(sweeps)}; "
          f"{'meets' if median(sweeps) < TARGET_SWEEP_MS else 'BELOW'} the < {TARGET_SWEEP_MS} ms target")
    print(f"  empty timer tick (sweep + dispatch + late mail) median {median(ticks):.1f} ms, "
          f"max {max(ticks):.1f} ms")
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(m["due_kinds"].items()))
    print(f"  {m['made_due']:,} timers made due ({kinds}): fired {m['fired']:,} in "
          f"{m['process_s']:.2f} s ({m['fired'] / max(m['process_s'], 1e-9):,.0f}/s, "
          f"{m['sweep_calls']} sweep calls)")
    print(f"  outbox: {', '.join(f'{k} {n:,}' for k, n in sorted(m['outbox'].items())) or 'empty'}"
          + ("" if args.dispatch else " (not sent: --dispatch sends them to a sink)"))
    if "dispatch_s" in m:
        print(f"  dispatched {m['sent']:,} to an aiosmtpd sink in {m['dispatch_s']:.2f} s "
              f"({m['sent'] / max(m['dispatch_s'], 1e-9):,.0f}/s)")
    rss = timed.max_rss_kb / 1024 or m["rss_kb"] / 1024
    print(f"  peak RSS {rss:.0f} MiB (after the empty sweeps {m['rss_empty_kb'] / 1024:.0f} MiB); "
          f"{'meets' if rss < TARGET_RSS_MB else 'BELOW'} the < {TARGET_RSS_MB} MB target")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000, help="stored cases (default 1,000,000)")
    parser.add_argument("--due", type=int, default=10_000, help="timers made due (default 10,000)")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL as well as SQLite")
    parser.add_argument("--dispatch", action="store_true",
                        help="also send the queued letters to an aiosmtpd sink, timed")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (SQLite file, logs)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the measuring process under py-spy; stacks and a summary go to DIR")
    parser.add_argument("--measure", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.due, args.dispatch)))
        return 0
    work = benchlib.begin("scale", "timer sweep over a large case store")
    try:
        run_database("SQLite", benchlib.sqlite_url(work / "scale.db"), work, args)
        if args.pg:
            if benchlib.postgres_version() is None:
                print(f"\nPostgreSQL: skipped, not reachable at {benchlib.PG_ADMIN_URL}")
            else:
                with benchlib.postgres_database(f"bench_scale_{os.getpid()}") as url:
                    run_database("PostgreSQL", url, work, args)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
