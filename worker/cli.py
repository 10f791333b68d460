"""The `complaints-worker` command line. Thin: parse arguments, call bootstrap and services, print."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.config import config_path, load_config
from worker.errors import InvalidInput, WorkerError

log = logging.getLogger("worker")

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. {text}Z")
    return value.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="complaints-worker", description=__doc__)
    parser.add_argument("--config", help="config file (default ./config.toml or "
                                         "$COMPLAINTS_WORKER_CONFIG)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    once = commands.add_parser("once", help="one full pass, then exit")
    once.add_argument("--now", type=_instant, help="the pass's clock (ISO 8601 with offset)")
    once.add_argument("--no-acknowledge", action="store_true",
                      help="import the backlog without acknowledging (cases are still opened)")
    commands.add_parser("run", help="poll and send until SIGTERM/SIGINT")

    demo = commands.add_parser("demo", help="end-to-end demo on embedded IMAP/SMTP servers")
    demo.add_argument("--out", default="demo-out", help="folder for the sent .eml files")
    demo.add_argument("--workdir", default=".demo", help="folder for the demo database/config")
    demo.add_argument("--weeks", type=int, default=10, help="how many weeks the story runs")

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command",
                                                                         required=True)
    db.add_parser("upgrade", help="apply Alembic migrations up to head")

    config = commands.add_parser("config", help="configuration").add_subparsers(
        dest="config_command", required=True)
    config.add_parser("check", help="validate the config, rules and templates")

    rules = commands.add_parser("rules", help="provider rule files").add_subparsers(
        dest="rules_command", required=True)
    rules_check = rules.add_parser("check", help="validate rule files")
    rules_check.add_argument("paths", nargs="*", type=Path)
    simulate = rules.add_parser("simulate", help="what the worker would do for one complaint")
    simulate.add_argument("--provider", required=True, help="provider id (rules/<id>.toml)")
    simulate.add_argument("--received", required=True, type=_instant,
                          help="when the complaint arrived (ISO 8601 with offset)")
    simulate.add_argument("--region", choices=["GB-ENG", "GB-SCT", "GB-NIR"],
                          help="override the holiday region")
    simulate.add_argument("--event", action="append", default=[], metavar="KIND@ISO",
                          help="a case event, e.g. staff-reply@2026-04-02T09:00:00Z (repeatable)")
    simulate.add_argument("--until", type=_instant, help="end of the timeline (default +10 weeks)")
    simulate.add_argument("--json", action="store_true")

    cases = commands.add_parser("cases", help="inspect cases").add_subparsers(
        dest="cases_command", required=True)
    cases_list = cases.add_parser("list")
    cases_list.add_argument("--provider")
    cases_list.add_argument("--status")
    cases_list.add_argument("--overdue", action="store_true",
                            help="only open cases with a missed deadline")
    cases_list.add_argument("--json", action="store_true")
    cases_show = cases.add_parser("show")
    cases_show.add_argument("reference")
    cases_show.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="mailboxes, outbox and quarantine")
    status.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except InvalidInput as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except WorkerError as exc:
        print(f"complaints-worker: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    if args.command == "rules":
        return _rules(args, path)
    if args.command == "demo":
        from worker.demo import run_demo

        return run_demo(out=Path(args.out), workdir=Path(args.workdir), weeks=args.weeks)
    if args.command == "config":
        from worker.bootstrap import load_checked

        config, providers, _ = load_checked(path)
        print(f"{path}: OK ({len(config.mailboxes)} mailbox(es), "
              f"{len(providers)} provider rule file(s))")
        return EXIT_OK
    if args.command == "db":
        from worker.adapters.db import upgrade

        upgrade(load_config(path).database_url)
        print("database is at the latest schema")
        return EXIT_OK

    if args.command in ("once", "run"):
        return _work(args, path)
    return _read(args, path)


def _work(args: argparse.Namespace, path: Path) -> int:
    from worker.bootstrap import build_app

    app = build_app(path)
    guard = _single_worker_guard(app.config.database_url)
    try:
        _require_current_schema(app.config.database_url, app.engine)
        if guard is not None:
            guard.acquire()
        if args.command == "once":
            return _once(app, args, shared=guard is None)
        return _run_forever(app, shared=guard is None)
    finally:
        if guard is not None:
            guard.release()
        app.close()


def _single_worker_guard(url: str) -> Any:
    """SQLite takes one worker; None for a database that several workers may share."""
    from sqlalchemy.engine import make_url

    from worker.adapters.locks import SingleWorkerGuard

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        return None
    return SingleWorkerGuard(Path(parsed.database).resolve())


def _mailbox_lock(app: Any, mailbox: Any) -> Any:
    from worker.adapters.locks import AdvisoryLock

    return AdvisoryLock(app.engine, f"mailbox:{mailbox.name}")


def _once(app: Any, args: argparse.Namespace, *, shared: bool) -> int:
    """One pass. On a shared database it polls only the mailboxes no other worker holds."""
    locks = {m.name: _mailbox_lock(app, m) for m in app.config.mailboxes} if shared else {}
    try:
        only = None
        if shared:
            only = [m for m in app.config.mailboxes if locks[m.name].try_hold()]
            for mailbox in app.config.mailboxes:
                if mailbox not in only:
                    print(f"{mailbox.name}: skipped, another worker is polling it")
        result = app.cycle.run_pass(now=args.now or datetime.now(UTC), only=only,
                                    acknowledge=False if args.no_acknowledge else None)
    finally:
        for lock in locks.values():
            lock.release()
    _print_pass(result)
    return EXIT_OK if result.ok else EXIT_FAILURE


def _read(args: argparse.Namespace, path: Path) -> int:
    """status and cases: they need the database, not valid rules (status reports on those)."""
    from worker.adapters.db import make_engine, session_factory
    from worker.services import queries

    config = load_config(path)
    engine = make_engine(config.database_url)
    try:
        _require_current_schema(config.database_url, engine)
        with session_factory(engine)() as session:
            if args.command == "status":
                data = queries.status(session, config)
                data["rules"] = _rules_state(config)
                _output(data, args.json, _print_status)
            elif args.cases_command == "list":
                rows = queries.list_cases(session, provider=args.provider,
                                          status_filter=args.status, overdue=args.overdue)
                _output(rows, args.json, _print_case_list)
            else:
                case = queries.show_case(session, args.reference)
                if case is None:
                    print(f"no case {args.reference}", file=sys.stderr)
                    return EXIT_FAILURE
                _output(case, args.json, _print_case)
        return EXIT_OK
    finally:
        engine.dispose()


def _rule_folders(path: Path) -> tuple[Path, Path]:
    """The rules and templates folders: from the config file when there is one, else ./rules."""
    if path.is_file():
        config = load_config(path)
        return config.rules_dir, config.templates_dir
    return Path("rules"), Path("templates/emails")


def _load_rules(path: Path, paths: list[Path] | None = None) -> Any:
    from worker.adapters.rules import load_rule_set
    from worker.adapters.templates import TemplateRenderer

    rules_dir, templates_dir = _rule_folders(path)
    renderer = TemplateRenderer(templates_dir)
    rule_set = load_rule_set(rules_dir, paths,
                             template_exists=lambda provider, name: not renderer.missing(provider,
                                                                                         name))
    for warning in rule_set.warnings:
        print(warning, file=sys.stderr)
    return rule_set


def _rules(args: argparse.Namespace, path: Path) -> int:
    """`rules check` and `rules simulate`."""
    if args.rules_command == "simulate":
        return _rules_simulate(args, path)
    rule_set = _load_rules(path, list(args.paths) or None)
    for provider in rule_set.providers.values():
        print(f"{provider.id}: OK ({len(provider.obligations)} obligations)")
    return EXIT_OK


def _rules_simulate(args: argparse.Namespace, path: Path) -> int:
    from worker.core.calendar import BusinessCalendar
    from worker.core.lifecycle import events_of, plan

    rule_set = _load_rules(path)
    rules = rule_set.providers.get(args.provider)
    if rules is None:
        known = ", ".join(sorted(rule_set.providers))
        print(f"complaints-worker: no provider '{args.provider}' (known: {known})", file=sys.stderr)
        return EXIT_INVALID
    try:
        events = events_of(args.event)
    except ValueError as exc:
        print(f"complaints-worker: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.region:
        rules = rules.with_region(args.region)
    calendar = BusinessCalendar.build(rules.calendar_spec())
    result = plan(rules, calendar, received=args.received, events=events, until=args.until)
    data = _plan_json(rules, args.received, result)
    _output(data, args.json, _print_plan)
    return EXIT_OK


def _utc(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _plan_json(rules: Any, received: datetime, result: Any) -> dict[str, Any]:
    obligations: dict[str, Any] = {}
    for item in result.obligations:
        entry: dict[str, Any] = {"due": _utc(item.due), "met": _utc(item.met)}
        if item.repeating:
            entry["next_due"] = _utc(item.next_due)
        if item.hard_limit:
            entry["hard_limit"] = _utc(item.hard_limit)
        obligations[item.id] = entry
    timeline = []
    for action in result.timeline:
        entry = {"at": _utc(action.at), "action": action.action}
        for key in ("template", "to", "obligation", "note"):
            if value := getattr(action, key):
                entry[key] = value
        timeline.append(entry)
    return {"provider": rules.id, "region": rules.holiday_region, "received": _utc(received),
            "obligations": obligations, "timeline": timeline}


def _print_plan(data: dict[str, Any]) -> None:
    print(f"{data['provider']} ({data['region']}), complaint received {data['received']}\n")
    print(f"{'obligation':<20} {'due':<26} {'met':<26} next due")
    for name, item in data["obligations"].items():
        print(f"{name:<20} {item['due'] or '-':<26} {item['met'] or '-':<26} "
              f"{item.get('next_due') or ''}")
    print(f"\n{'when (UTC)':<26} {'action':<9} {'what':<30} note")
    for entry in data["timeline"]:
        what = entry.get("template") or entry.get("obligation") or ""
        if entry.get("to"):
            what = f"{what} -> {entry['to']}" if what else f"-> {entry['to']}"
        print(f"{entry['at']:<26} {entry['action']:<9} {what:<30} {entry.get('note', '')}")


def _require_current_schema(url: str, engine: Any) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from worker.adapters.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise WorkerError(f"the database schema is at {current or 'nothing'}, not {head}: "
                          "run `complaints-worker db upgrade` first")


def _run_forever(app: Any, *, shared: bool) -> int:
    """Each mailbox has a thread that polls it and then waits in IMAP IDLE (or the poll
    interval); APScheduler runs the timer tick. Deadlines live in the timer table, not in jobs.

    A lock keeps the threads from writing at once (SQLite has one writer, and one process
    gains little from more), and each finishes the unit of work in hand before a stop. On a
    shared database a mailbox is polled only by the worker holding its advisory lock.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    from worker.adapters.imap import ImapMailbox
    from worker.services.cycle import PassResult
    from worker.services.watch import MailboxWatcher

    stop = threading.Event()
    work = threading.Lock()
    settings = app.config.worker
    sources = {m.name: ImapMailbox(m, keep_open=True) for m in app.config.mailboxes}
    app.cycle.mailbox_factory = lambda mailbox: sources[mailbox.name]

    def timers() -> None:
        with work:
            if stop.is_set():
                return
            try:
                app.cycle.fire_and_send(PassResult(), now=datetime.now(UTC))
            except Exception:
                log.exception("timer tick failed; the next tick will retry")

    def poll(mailbox: Any) -> int:
        """Poll one mailbox and send what it queued at once; returns how many were fetched."""
        with work:
            if stop.is_set():
                return 0
            result = PassResult()
            now = datetime.now(UTC)
            try:
                app.cycle.poll_mailboxes(result, now=now, respect_backoff=True,
                                         should_stop=stop.is_set, only=[mailbox])
                app.cycle.fire_and_send(result, now=now)
            except Exception:
                log.exception("mailbox %s: poll failed; it will be polled again", mailbox.name)
                return 0
            return sum(p.fetched for p in result.polls)

    watchers = [MailboxWatcher(mailbox=m, source=sources[m.name], poll=poll, stop=stop,
                               poll_seconds=settings.poll_interval_seconds,
                               ownership=_mailbox_lock(app, m) if shared else None)
                for m in app.config.mailboxes]
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(timers, "interval", id="timers", seconds=settings.sweep_interval_seconds,
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduler.start()
    for watcher in watchers:
        watcher.start()
    log.info("worker running: %d mailbox(es), IMAP IDLE where offered (else polling every %ss), "
             "timers every %ss", len(app.config.mailboxes), settings.poll_interval_seconds,
             settings.sweep_interval_seconds)
    stop.wait()
    log.info("stopping: finishing the unit of work in hand")
    scheduler.shutdown(wait=True)
    for watcher in watchers:
        watcher.join()
    return EXIT_OK


def _output(data: Any, as_json: bool, human: Any) -> None:
    if as_json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
        print()
    else:
        human(data)


def _print_pass(result: Any) -> None:
    for poll in result.polls:
        print(f"{poll.mailbox}: {poll.fetched} fetched, {poll.cases_opened} new case(s), "
              f"{poll.joined} joined, {poll.quarantined} quarantined, {poll.duplicates} duplicate(s)"
              + (f", {poll.retrying} failed (tried again next pass)" if poll.retrying else ""))
    for name, error in result.mailbox_errors.items():
        print(f"{name}: ERROR {error}")
    d = result.dispatch
    print(f"outbox: {d.sent} sent, {d.retrying} to retry, {d.failed} failed"
          + (f" (SMTP unavailable: {d.outage})" if d.outage else ""))
    if d.deferred:
        print(f"outbox: {len(d.deferred)} automatic message(s) held back by the global rate limit")
    if result.late_mail:
        print(f"outbox: {result.late_mail} message(s) past their deadline: breaches recorded")
    if result.database_error:
        print(f"timers and outbox: ERROR {result.database_error}")


def _rules_state(config: Any) -> dict[str, Any]:
    """Whether the rule files on disk would be accepted by a reload right now."""
    from worker.adapters.templates import TemplateRenderer
    from worker.bootstrap import check_rules

    try:
        check_rules(config, TemplateRenderer(config.templates_dir))
    except InvalidInput as exc:
        return {"valid": False, "problems": [str(p) for p in exc.problems],
                "note": "a running worker keeps its last good rules until these are fixed"}
    return {"valid": True, "problems": []}


def _print_status(data: dict[str, Any]) -> None:
    rules = data["rules"]
    print("rules: OK" if rules["valid"] else f"rules: INVALID ({rules['note']})")
    for problem in rules["problems"]:
        print(f"  {problem}")
    for m in data["mailboxes"]:
        state = f"ERROR {m['last_error']}" if m["last_error"] else "ok"
        print(f"{m['name']:<20} {m['provider']:<26} last success {m['last_success_at'] or 'never'}"
              f"  backlog {m['backlog'] if m['backlog'] is not None else '?'}  {state}")
    o = data["outbox"]
    print(f"outbox: {o['pending']} pending, {o['sent']} sent, {o['failed']} failed")
    if data.get("smtp"):
        s = data["smtp"]
        print(f"smtp: UNAVAILABLE since {s['down_since']} ({s['failures']} failed attempt(s)), "
              f"next try {s['retry_at']}: {s['last_error']}")
    for row in o["failed_rows"]:
        print(f"  failed #{row['id']} {row['purpose']}: {row['error']}")
    overdue = data["overdue"]
    print(f"overdue obligations: {overdue['total']}")
    for row in overdue["latest"]:
        print(f"  {row['reference']} {row['rule']} ({row['kind']}) was due {row['due_at']}")
    q = data["quarantine"]
    print(f"quarantine: {q['total']} message(s)")
    for row in q["latest"]:
        print(f"  #{row['id']} {row['mailbox']} uid {row['uid']}: {row['reason']}")
    for row in q.get("retrying", []):
        print(f"  retrying {row['mailbox']} uid {row['uid']} ({row['attempts']} failed): "
              f"{row['last_error']}")


def _print_case_list(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no cases")
    for row in rows:
        print(f"{row['reference']:<18} {row['status']:<9} {row['provider']:<26} "
              f"{row['first_raised_at'][:16]}  {row['subject'][:60]}")


def _print_case(case: dict[str, Any]) -> None:
    print(f"{case['reference']}  {case['status']}  {case['provider']}")
    print(f"subject: {case['subject']}")
    print(f"first raised: {case['first_raised_at']}")
    print("parties: " + ", ".join(
        f"{p['address']} ({p['role']}"
        + (f"; UNDELIVERABLE: {p['undeliverable']}" if p["undeliverable"] else "") + ")"
        for p in case["parties"]))
    print("\nmessages:")
    for m in case["messages"]:
        who = f"from {m['from']}" if m["direction"] == "in" else f"to {', '.join(m['to'])}"
        label = m.get("purpose") or m.get("kind")
        print(f"--- {m['at']} {m['direction']} {label} {who} [{m['status']}]")
        print(f"    subject: {m['subject']}")
        for line in (m["text"] or "").strip().splitlines()[:40]:
            print(f"    | {line}")
    print("\ntimers:")
    for t in case["timers"]:
        promised = " (promised to the customer)" if t["promised"] else ""
        print(f"  {t['due_at']}  {t['rule']} {t['kind']}  [{t['status']}]{promised}")
    print("\naudit trail:")
    for e in case["events"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if v not in (None, [], ""))
        print(f"  {e['at']}  {e['kind']}  {detail}")


if __name__ == "__main__":
    raise SystemExit(main())
