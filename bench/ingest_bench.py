"""Ingest benchmark: the shared deterministic mail set through `complaints-worker once`, and the peer.

    .venv/bin/python bench/ingest_bench.py [--count 5000] [--skip-peer] [--skip-pg] [--no-notify]

One Dovecot (../shared/bench/mailserver.sh, on a free port) serves every run, its INBOX reloaded
with the same generated messages before each. Our worker runs as a separate process, exactly as
`complaints-worker --config X once` (fetch, parse, classify, thread, persist, acknowledgements and
staff notifications queued, then sent to an aiosmtpd sink), first on SQLite, then on SQLite with
acknowledgements only (no staff notifications: what SPEC 8 lists, and what the peer sends), then
on a throwaway PostgreSQL database. A pass sends a bounded batch of the outbox, so `once` is repeated
until nothing is left to send; throughput is messages / wall time of all those commands, start-up
included, as for the peer; peak RSS comes from /usr/bin/time -v. Each run is checked against the
generator's manifest: every message stored once, opened or joined the right case, acknowledged.

The sink is bench/light_sink.py, which reads only each message's header; `--recipe-sink` uses
the recipe's smtp_sink.py instead, whose whole-message parse costs several ms a message and caps
the run below the target on its own (both print the sink's CPU and the cap it implies).

Then django-helpdesk's `get_email` on the same server and the same N, set up and run by
../shared/bench/django_helpdesk_peer.sh (its own virtualenv, cached in $TMPDIR/bench-peer-venv).
Without ../shared (or $BENCH_SHARED) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import profiling
from benchlib import MailServer, Sink, Timed

from tests.servers import free_port

TARGET_PER_SECOND = 600
TARGET_PEER_RATIO = 15
MAX_PASSES = 50
ACKS_ONLY = "SQLite, acks only"
KINDS = ("new", "attachment", "reply", "reply_refs", "autoreply", "bounce")


@dataclass(slots=True)
class Outcome:
    label: str
    count: int
    passes: list[Timed]
    inbox_left: int
    per_kind: dict[str, Counter[str]]
    outbox: Counter[tuple[str, str]]
    cases: int
    sink_acks: int
    sink_notifications: int
    problems: list[str] = field(default_factory=list)
    sink_cpu_s: float = 0.0

    @property
    def wall_s(self) -> float:
        return sum(t.wall_s for t in self.passes)

    @property
    def cpu_s(self) -> float:
        return sum(t.user_s + t.sys_s for t in self.passes)

    @property
    def rss_mib(self) -> float:
        return max(t.rss_mib for t in self.passes)

    @property
    def rate(self) -> float:
        return self.count / self.wall_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="messages (default 5000)")
    parser.add_argument("--skip-peer", action="store_true", help="do not run django-helpdesk")
    parser.add_argument("--skip-pg", action="store_true", help="do not run on PostgreSQL")
    parser.add_argument("--no-notify", action="store_true",
                        help="no staff notification per customer message (acknowledgements only)")
    parser.add_argument("--recipe-sink", action="store_true",
                        help="send to the recipe's smtp_sink.py (parses every whole message) instead "
                             "of bench/light_sink.py (header only)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run our passes under py-spy; stacks and a summary go to DIR "
                             "(the figures of a profiled run are not comparable)")
    args = parser.parse_args(argv)
    recipe = benchlib.require_shared("ingest benchmark")
    if recipe is None:
        return 0
    work = benchlib.begin("ingest", "shared mail set -> Dovecot -> `once` -> sink")
    sink_script = recipe / "smtp_sink.py" if args.recipe_sink else benchlib.LIGHT_SINK
    server = MailServer(recipe, work / "dovecot")
    try:
        mailset, manifest = benchlib.generate_mail(recipe, args.count, work)
        kinds = Counter(m["kind"] for m in manifest)
        print(f"mail set    {args.count} messages, {sum(m['size'] for m in manifest) / 1e6:.1f} MB "
              f"(seed 20240304): " + ", ".join(f"{k} {kinds[k]}" for k in KINDS))
        print(f"config      claranet-soho rules, processed mail moved to a folder, "
              f"{'no staff notifications' if args.no_notify else 'staff notified of each message'}")
        print(f"sink        {sink_script} (aiosmtpd)")
        server.start()
        outcomes = [run_ours(server, sink_script, work, "SQLite",
                             benchlib.sqlite_url(work / "bench.db"), manifest, mailset,
                             notify=not args.no_notify, profile=args.profile)]
        if not args.no_notify:
            # What SPEC 8 lists (acknowledgements, no staff notifications) and what the peer
            # does (its queue notifies no staff): the like-for-like figure.
            outcomes.append(run_ours(server, sink_script, work, ACKS_ONLY,
                                     benchlib.sqlite_url(work / "bench-acks.db"), manifest,
                                     mailset, notify=False))
        startup = startup_seconds(server, sink_script, work, notify=not args.no_notify)
        if args.skip_pg:
            print("PostgreSQL  skipped (--skip-pg)")
        elif benchlib.postgres_version() is None:
            print(f"PostgreSQL  skipped: not reachable at {benchlib.PG_ADMIN_URL}")
        else:
            with benchlib.postgres_database(f"bench_ingest_{os.getpid()}") as url:
                outcomes.append(run_ours(server, sink_script, work, "PostgreSQL", url, manifest, mailset,
                                         notify=not args.no_notify, profile=args.profile))
        peer = None if args.skip_peer else run_peer(recipe, server, work, args.count)
    finally:
        server.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(outcomes, peer, startup, args.count)
    return 0 if all(not o.problems for o in outcomes) else 1


# ---------------------------------------------------------------------------- our worker


def run_ours(server: MailServer, sink_script: Path, work: Path, label: str, db_url: str,
             manifest: list[dict[str, Any]], mailset: Path, *, notify: bool,
             profile: Path | None = None) -> Outcome:
    name = benchlib.slug(label)
    prefix: list[str] = []
    stacks: Path | None = None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        stacks = profile / f"ingest-{name}-{len(manifest)}.txt"
        stacks.unlink(missing_ok=True)
        prefix = profiling.pyspy_prefix(stacks) or []
        if not prefix:
            print("profile     py-spy not found: `.venv/bin/pip install py-spy` (not a project dependency)")
    server.load(mailset, len(manifest))
    sink = Sink(sink_script, work / f"sink-{name}.jsonl")
    config = benchlib.worker_config(work / f"{name}.toml", db_url=db_url, imap_port=server.port,
                                    smtp_port=sink.port, notify=notify, worker=backlog_settings())
    benchlib.migrate(config)
    print(f"running     `once` over {len(manifest)} messages on {label} ...", flush=True)
    passes: list[Timed] = []
    with sink:
        # A pass sends a bounded share of the outbox; what is left goes in the next passes,
        # which are part of the cost of getting every acknowledgement out.
        while len(passes) < MAX_PASSES:
            log = work / f"once-{name}-{len(passes) + 1}.log"
            passes.append(benchlib.run_timed([*prefix, *benchlib.worker_command(config, "once")],
                                             log=log))
            prefix = []
            if passes[-1].returncode != 0 or not pending_mail(db_url):
                break
    if len(passes) > 1:
        print(f"            {len(passes)} passes to send everything: "
              + ", ".join(f"{t.wall_s:.2f} s" for t in passes))
    if stacks is not None and stacks.exists():
        summary = profiling.summarise(stacks)
        stacks.with_suffix(".summary").write_text("\n".join(summary) + "\n")
        print(f"profile     {stacks} (summary: {stacks.with_suffix('.summary')}); "
              "this run's figures include the profiler")
    outcome = check(label, db_url, manifest, sink.records(), passes, server.count())
    outcome.sink_cpu_s = sink.cpu_s
    if passes[-1].returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        outcome.problems.append(f"`once` exited with {passes[-1].returncode}: " + " | ".join(tail))
    return outcome


def backlog_settings() -> dict[str, int]:
    """The shipped per-recipient limits, but the global hourly limit on automatic mail (where this
    worker has one) raised: a backlog of thousands is acknowledged in full, as the peer does."""
    from worker.config import WorkerSettings

    fields = getattr(WorkerSettings, "__dataclass_fields__", {})
    return {"global_rate_limit_per_hour": 1_000_000} if "global_rate_limit_per_hour" in fields else {}


def pending_mail(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(
                text("SELECT count(*) FROM outbox WHERE status = 'pending'")).scalar_one())
    finally:
        engine.dispose()


def startup_seconds(server: MailServer, sink_script: Path, work: Path, *, notify: bool) -> float:
    """Wall time of `once` on an empty INBOX: the fixed cost inside each run's figure."""
    server.load_empty()
    sink = Sink(sink_script, work / "sink-empty.jsonl")
    config = benchlib.worker_config(work / "empty.toml", db_url=benchlib.sqlite_url(work / "empty.db"),
                                    imap_port=server.port, smtp_port=sink.port, notify=notify)
    benchlib.migrate(config)
    with sink:
        return benchlib.run_timed(benchlib.worker_command(config, "once"),
                                  log=work / "once-empty.log").wall_s


def check(label: str, db_url: str, manifest: list[dict[str, Any]], sink: list[dict[str, Any]],
          passes: list[Timed], inbox_left: int) -> Outcome:
    """What the worker did with each manifest message, from its database and the sink's log."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = list(connection.execute(text(
                "SELECT id, message_id, status, case_id FROM inbound_message ORDER BY id")))
            cases = int(connection.execute(text("SELECT count(*) FROM cases")).scalar_one())
            outbox = Counter({(purpose, status): int(n) for purpose, status, n in connection.execute(
                text("SELECT purpose, status, count(*) FROM outbox GROUP BY purpose, status"))})
    finally:
        engine.dispose()
    first_of_case: dict[int, int] = {}
    by_mid: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if row.case_id is not None:
            first_of_case.setdefault(row.case_id, row.id)
        by_mid[row.message_id].append(row)
    acked = Counter((r.get("in-reply-to") or "").strip() for r in sink
                    if benchlib.NOTIFY not in r.get("rcpt_tos", []))
    notifications = sum(1 for r in sink if benchlib.NOTIFY in r.get("rcpt_tos", []))
    per_kind: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    problems: list[str] = []
    for m in manifest:
        tally = per_kind.setdefault(m["kind"], Counter())
        tally["messages"] += 1
        found = by_mid.get(m["message_id"], [])
        if len(found) != 1:
            tally["not stored" if not found else "stored twice"] += 1
            continue
        row = found[0]
        if row.status != "processed":
            tally[row.status] += 1
        elif first_of_case.get(row.case_id) == row.id:
            tally["opened case"] += 1
        else:
            root = by_mid.get(m["thread"], [])
            same = bool(root) and root[0].case_id == row.case_id
            tally["joined its thread" if same else "joined another case"] += 1
        if acked[m["message_id"]]:
            tally["acknowledged"] += 1
    missing = sum(t["not stored"] + t["stored twice"] for t in per_kind.values())
    if missing:
        problems.append(f"{missing} manifest message(s) not stored exactly once")
    if inbox_left:
        problems.append(f"{inbox_left} message(s) still in INBOX after the pass")
    unsent = sum(n for (_, status), n in outbox.items() if status in ("pending", "failed"))
    if unsent:
        problems.append(f"{unsent} outbox message(s) not sent")
    sent_acks = outbox[("acknowledgement", "sent")]
    sink_acks = sum(acked.values())
    if sent_acks != sink_acks:
        problems.append(f"outbox says {sent_acks} acknowledgements sent, the sink got {sink_acks}")
    return Outcome(label=label, count=len(manifest), passes=passes, inbox_left=inbox_left,
                   per_kind=per_kind, outbox=outbox, cases=cases, sink_acks=sink_acks,
                   sink_notifications=notifications, problems=problems)


# ---------------------------------------------------------------------------- the peer


def run_peer(recipe: Path, server: MailServer, work: Path, count: int) -> dict[str, Any] | None:
    """django_helpdesk_peer.sh setup + run N on our Dovecot; its result.json, or None."""
    script = recipe / "django_helpdesk_peer.sh"
    if not script.is_file():
        print(f"peer        skipped: {script} not found")
        return None
    env = {**server.env, "BENCH_PEER_DIR": str(work / "peer-project"),
           "BENCH_RESULTS_DIR": str(work / "peer-results"),
           "BENCH_SMTP_PORT": str(free_port())}
    for step in (["setup"], ["run", str(count)]):
        print(f"peer        django_helpdesk_peer.sh {' '.join(step)} ...", flush=True)
        log = work / f"peer-{step[0]}.log"
        with log.open("wb") as out:
            code = subprocess.run([str(script), *step], env=env, stdout=out,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = log.read_text(errors="replace").splitlines()[-10:]
            print(f"peer        {step[0]} failed ({code}):\n  " + "\n  ".join(tail))
            return None
    results = sorted((work / "peer-results").glob("run-*/result.json"))
    if not results:
        print("peer        no result.json written")
        return None
    result: dict[str, Any] = json.loads(results[-1].read_text())
    return result


# ---------------------------------------------------------------------------- output


def report(outcomes: list[Outcome], peer: dict[str, Any] | None, startup: float, count: int) -> None:
    for o in outcomes:
        print(f"\n{o.label}: what happened to each message (from the database and the sink)")
        columns = sorted({c for t in o.per_kind.values() for c in t} - {"messages"})
        print(f"  {'kind':<11} {'messages':>8} " + " ".join(f"{c:>{max(len(c), 6)}}" for c in columns))
        for kind, tally in o.per_kind.items():
            print(f"  {kind:<11} {tally['messages']:>8} "
                  + " ".join(f"{tally[c]:>{max(len(c), 6)}}" for c in columns))
        outbox = ", ".join(f"{p} {s} {n}" for (p, s), n in sorted(o.outbox.items()))
        print(f"  cases {o.cases}; outbox: {outbox}")
        print(f"  sink received {o.sink_acks} acknowledgements, {o.sink_notifications} staff "
              f"notifications; INBOX left {o.inbox_left}")
        received = o.sink_acks + o.sink_notifications
        if o.sink_cpu_s and received:
            # The sink handles every message in one thread: no worker can go faster than it.
            print(f"  the sink itself used {o.sink_cpu_s:.2f} s of CPU "
                  f"({o.sink_cpu_s / received * 1000:.1f} ms a message): on its own it caps this "
                  f"run at {o.count / o.sink_cpu_s:.0f} msg/s")
        for problem in o.problems:
            print(f"  PROBLEM: {problem}")

    print(f"\ningest of {count} messages (wall time of the whole command, start-up included; "
          f"`once` on an empty INBOX takes {startup:.2f} s)")
    print(f"  {'run':<26} {'wall s':>8} {'msg/s':>8} {'CPU s':>7} {'peak RSS':>10}  passes")
    for o in outcomes:
        print(f"  {'ours, ' + o.label:<26} {o.wall_s:>8.2f} {o.rate:>8.1f} {o.cpu_s:>7.2f} "
              f"{o.rss_mib:>7.1f} MiB  {len(o.passes)}"
              + ("  INVALID: see PROBLEM above" if o.problems else ""))
    peer_rate = None
    if peer:
        peer_rate = peer.get("msgs_per_s")
        print(f"  {'django-helpdesk 2.6.1':<26} {peer.get('wall_s', 0):>8.2f} {peer_rate or 0:>8.1f} "
              f"{peer.get('user_s', 0) + peer.get('sys_s', 0):>7.2f} "
              f"{peer.get('max_rss_kb', 0) / 1024:>7.1f} MiB")
        print(f"  peer: {peer.get('processed_removed_from_inbox')} processed, {peer.get('tickets')} "
              f"tickets, {peer.get('emails_sent_to_sink')} emails sent, "
              f"{peer.get('manifest_messages_missing')} manifest messages missing")
    for o in outcomes:
        if o.problems:
            print(f"  {o.label}: no verdict, the run did not process everything (see PROBLEM above)")
            continue
        line = f"  {o.label}: {o.rate:.0f} msg/s"
        if o.label.startswith("SQLite"):
            verdict = "meets" if o.rate >= TARGET_PER_SECOND else "BELOW"
            line += f", {verdict} the {TARGET_PER_SECOND} msg/s target"
        if peer_rate:
            ratio = o.rate / peer_rate
            verdict = "meets" if ratio >= TARGET_PEER_RATIO else "BELOW"
            line += f"; {ratio:.1f}x the peer, {verdict} the {TARGET_PEER_RATIO}x target"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
