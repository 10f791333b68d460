"""Re-planning open cases after a rule or calendar change (docs/rules.md, "Changing rules")."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, ROOT, Worker, mailbox_for
from tests.test_intake_e2e import complaint
from worker.adapters.rules import load_rule_set
from worker.core.calendar import BusinessCalendar
from worker.core.replan import PlannedTimer, replan
from worker.core.rules import Duration, ProviderRules, Severity, Unit
from worker.embedded import deliver_many

RULES = load_rule_set(ROOT / "rules").providers
INFINITY = RULES["infinity-group"]
HALF_DAYS = ((((time(9), time(13))),),) * 5 + ((), ())


def with_target(rules: ProviderRules, hours: int, severity: Severity) -> ProviderRules:
    """Infinity with its email_response as `hours` business hours of the given severity."""
    obligation = replace(rules.obligation("email_response"),
                         due=Duration(unit=Unit.BUSINESS_HOURS, amount=Decimal(hours)),
                         severity=severity)
    return replace(rules, obligations=tuple(
        obligation if o.id == "email_response" else o for o in rules.obligations))


def calendar(rules: ProviderRules) -> BusinessCalendar:
    return BusinessCalendar.build(rules.calendar_spec())


START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)        # Monday 09:00 BST
END_OF_MONDAY = datetime(2026, 6, 1, 16, 30, tzinfo=UTC)  # Monday 17:30 BST: 8.5 hours spent


def test_elapsed_business_time_is_kept_when_hours_change():
    old = with_target(INFINITY, 10, Severity.TARGET)
    new = replace(old, weekly_hours=HALF_DAYS)
    # Planned on the old long days: 8.5 hours on Monday, 1.5 on Tuesday, due 10:30 BST.
    tuesday = datetime(2026, 6, 2, 9, 30, tzinfo=UTC)
    timer = PlannedTimer(obligation_id="email_response", kind="due", start_at=START,
                         due_at=tuesday, promised=False)
    outcome = replan(timer, new_rules=new, old_calendar=calendar(old), new_calendar=calendar(new),
                     now=END_OF_MONDAY)
    # The hours change at Monday's close. Monday's 8.5 hours were spent; the 1.5 left run on the
    # new half days, so Tuesday 10:30 BST stands. Recomputing from the start on the new
    # calendar would wrongly move it to Wednesday.
    assert not outcome.changed and outcome.due_at == tuesday
    naive = calendar(new).add_business_seconds(START, 10 * 3600)
    assert naive == datetime(2026, 6, 3, 10, 0, tzinfo=UTC)  # Mon 4h, Tue 4h, Wed 2h

    later = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)  # Tuesday 09:00 BST, nothing spent yet today
    outcome = replan(timer, new_rules=new, old_calendar=calendar(old), new_calendar=calendar(new),
                     now=later)
    assert not outcome.changed and outcome.due_at == tuesday

    longer = with_target(old, 14, Severity.TARGET)
    longer_new = replace(longer, weekly_hours=HALF_DAYS)
    outcome = replan(replace(timer, due_at=datetime(2026, 6, 2, 13, 30, tzinfo=UTC)),
                     new_rules=longer_new, old_calendar=calendar(longer),
                     new_calendar=calendar(longer_new), now=END_OF_MONDAY)
    # 14 hours: 8.5 spent, 5.5 left on half days: Tuesday 09:00-13:00, Wednesday 09:00-10:30 BST.
    assert outcome.changed and outcome.due_at == datetime(2026, 6, 3, 9, 30, tzinfo=UTC)


def test_a_closure_added_later_pushes_an_internal_target():
    old = INFINITY
    new = replace(INFINITY, closures=frozenset({datetime(2026, 6, 4).date()}))
    start = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    timer = PlannedTimer(obligation_id="email_response", kind="due", start_at=start,
                         due_at=datetime(2026, 6, 8, 16, 30, tzinfo=UTC), promised=False)
    outcome = replan(timer, new_rules=new, old_calendar=calendar(old), new_calendar=calendar(new),
                     now=datetime(2026, 6, 3, 8, 0, tzinfo=UTC))
    assert outcome.changed and outcome.due_at == datetime(2026, 6, 9, 16, 30, tzinfo=UTC)


def test_a_promise_to_the_customer_never_moves():
    old = with_target(INFINITY, 10, Severity.COMMITMENT)
    new = replace(old, weekly_hours=HALF_DAYS)
    due = datetime(2026, 6, 2, 9, 30, tzinfo=UTC)
    for promised_due in (due, due + timedelta(days=2)):
        timer = PlannedTimer(obligation_id="email_response", kind="due", start_at=START,
                             due_at=promised_due, promised=True)
        outcome = replan(timer, new_rules=new, old_calendar=calendar(old),
                         new_calendar=calendar(new), now=END_OF_MONDAY)
        if promised_due == due:
            assert not outcome.changed and not outcome.kept_promise
        else:
            assert not outcome.changed and outcome.kept_promise
            assert outcome.due_at == promised_due


def test_calendar_week_clocks_and_past_timers_are_left_alone():
    new = replace(INFINITY, weekly_hours=HALF_DAYS)
    adr = PlannedTimer(obligation_id="adr_letter", kind="due", start_at=START,
                       due_at=START + timedelta(weeks=6), promised=True)
    outcome = replan(adr, new_rules=new, old_calendar=calendar(INFINITY),
                     new_calendar=calendar(new), now=END_OF_MONDAY)
    assert not outcome.changed and outcome.due_at == START + timedelta(weeks=6)
    past = replace(adr, due_at=START + timedelta(hours=1))
    assert replan(past, new_rules=new, old_calendar=calendar(INFINITY),
                  new_calendar=calendar(new), now=END_OF_MONDAY).reason.startswith("already due")


def test_rule_edit_replans_open_cases_with_an_audit_trail(tmp_path: Path, pymap, smtp):
    rules_copy = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules_copy)
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("infinity-group")])
    worker.config_path.write_text(worker.config_path.read_text().replace(
        f'rules = "{ROOT / "rules"}"', f'rules = "{rules_copy}"'))
    worker = worker.restart()
    address = PROVIDER_ADDRESSES["infinity-group"]
    deliver_many("127.0.0.1", pymap.port, address, PASSWORD, [(complaint(1), START)])
    worker.once(START)
    reference = worker.cases()[0]["reference"]
    before = {t["rule"]: t["due_at"] for t in worker.case(reference)["timers"] if t["kind"] == "due"}
    assert before["email_response"] == "2026-06-08T16:30:00+00:00"

    # The provider closes on Thursday 4 June: the target moves a day, the ADR letter does not.
    infinity = rules_copy / "infinity-group.toml"
    infinity.write_text(infinity.read_text() + "\n[calendar]\nclosures = [2026-06-04]\n")
    worker.once(datetime(2026, 6, 3, 8, 0, tzinfo=UTC))

    case = worker.case(reference)
    after = {t["rule"]: t["due_at"] for t in case["timers"] if t["kind"] == "due"}
    assert after["email_response"] == "2026-06-09T16:30:00+00:00"
    assert after["adr_letter"] == before["adr_letter"]
    replanned = [e for e in case["events"] if e["kind"] == "timer_replanned"]
    assert {e["detail"]["kind"] for e in replanned} == {"due", "reminder"}
    [event] = [e for e in replanned if e["detail"]["kind"] == "due"]
    assert event["detail"]["rule"] == "email_response"
    assert "elapsed business time" in event["detail"]["reason"]
    worker.close()
