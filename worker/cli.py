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

    cases = commands.add_parser("cases", help="inspect cases").add_subparsers(
        dest="cases_command", required=True)
    cases_list = cases.add_parser("list")
    cases_list.add_argument("--provider")
    cases_list.add_argument("--status")
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
        return _rules_check(args, path)
    if args.command == "demo":
        from worker.demo import run_demo

        return run_demo(out=Path(args.out), workdir=Path(args.workdir))
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

    from worker.bootstrap import build_app
    from worker.services import queries

    app = build_app(path)
    try:
        _require_current_schema(app)
        if args.command == "once":
            result = app.cycle.run_pass(now=args.now or datetime.now(UTC),
                                        acknowledge=False if args.no_acknowledge else None)
            _print_pass(result)
            return EXIT_OK if result.ok else EXIT_FAILURE
        if args.command == "run":
            return _run_forever(app)
        with app.sessions() as session:
            if args.command == "status":
                _output(queries.status(session, app.config), args.json, _print_status)
            elif args.cases_command == "list":
                rows = queries.list_cases(session, provider=args.provider,
                                          status_filter=args.status)
                _output(rows, args.json, _print_case_list)
            else:
                case = queries.show_case(session, args.reference)
                if case is None:
                    print(f"no case {args.reference}", file=sys.stderr)
                    return EXIT_FAILURE
                _output(case, args.json, _print_case)
        return EXIT_OK
    finally:
        app.close()


def _rules_check(args: argparse.Namespace, path: Path) -> int:
    from worker.adapters.rules import load_rule_set

    rules_dir = Path("rules")
    if not args.paths and path.is_file():
        rules_dir = load_config(path).rules_dir
    providers = load_rule_set(rules_dir, list(args.paths) or None)
    for provider in providers.values():
        print(f"{provider.id}: OK")
    return EXIT_OK


def _require_current_schema(app: Any) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from worker.adapters.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config(app.config.database_url)).get_current_head()
    with app.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise WorkerError(f"the database schema is at {current or 'nothing'}, not {head}: "
                          "run `complaints-worker db upgrade` first")


def _run_forever(app: Any) -> int:
    from apscheduler.schedulers.background import BackgroundScheduler

    stop = threading.Event()

    def one_pass() -> None:
        try:
            app.cycle.run_pass(now=datetime.now(UTC), respect_backoff=True,
                               should_stop=stop.is_set)
        except Exception:
            log.exception("worker pass failed; the next pass will retry")

    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(one_pass, "interval", seconds=app.config.worker.poll_interval_seconds,
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True,
                      id="pass")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduler.start()
    log.info("worker running: %d mailbox(es), polling every %ss", len(app.config.mailboxes),
             app.config.worker.poll_interval_seconds)
    stop.wait()
    log.info("stopping: finishing the unit of work in hand")
    scheduler.shutdown(wait=True)
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
              f"{poll.joined} joined, {poll.quarantined} quarantined, {poll.duplicates} duplicate(s)")
    for name, error in result.mailbox_errors.items():
        print(f"{name}: ERROR {error}")
    d = result.dispatch
    print(f"outbox: {d.sent} sent, {d.retrying} to retry, {d.failed} failed"
          + (f" (SMTP unavailable: {d.outage})" if d.outage else ""))


def _print_status(data: dict[str, Any]) -> None:
    for m in data["mailboxes"]:
        state = f"ERROR {m['last_error']}" if m["last_error"] else "ok"
        print(f"{m['name']:<20} {m['provider']:<26} last success {m['last_success_at'] or 'never'}"
              f"  backlog {m['backlog'] if m['backlog'] is not None else '?'}  {state}")
    o = data["outbox"]
    print(f"outbox: {o['pending']} pending, {o['sent']} sent, {o['failed']} failed")
    for row in o["failed_rows"]:
        print(f"  failed #{row['id']} {row['purpose']}: {row['error']}")
    q = data["quarantine"]
    print(f"quarantine: {q['total']} message(s)")
    for row in q["latest"]:
        print(f"  #{row['id']} {row['mailbox']} uid {row['uid']}: {row['reason']}")


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
    print("parties: " + ", ".join(f"{p['address']} ({p['role']})" for p in case["parties"]))
    print("\nmessages:")
    for m in case["messages"]:
        who = f"from {m['from']}" if m["direction"] == "in" else f"to {', '.join(m['to'])}"
        label = m.get("purpose") or m.get("kind")
        print(f"--- {m['at']} {m['direction']} {label} {who} [{m['status']}]")
        print(f"    subject: {m['subject']}")
        for line in (m["text"] or "").strip().splitlines()[:40]:
            print(f"    | {line}")
    print("\naudit trail:")
    for e in case["events"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if v not in (None, [], ""))
        print(f"  {e['at']}  {e['kind']}  {detail}")
