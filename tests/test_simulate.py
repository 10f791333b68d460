"""`rules simulate`: the worked examples of RULES-RESEARCH.md §4, and the timeline it promises."""

from __future__ import annotations

import json

import pytest

from tests.harness import ROOT
from worker.cli import main


@pytest.fixture(autouse=True)
def in_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COMPLAINTS_WORKER_CONFIG", str(ROOT / "no-config-here.toml"))


def simulate(capsys: pytest.CaptureFixture[str], provider: str, received: str, *extra: str) -> dict:
    code = main(["rules", "simulate", "--provider", provider, "--received", received, "--json",
                 *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


WORKED_EXAMPLES = [
    # id, provider, received, extra args, obligation, field, expected (UTC)
    ("WE1a", "claranet-soho", "2023-12-22T16:00:00Z", [], "initial_response", "due",
     "2023-12-27T16:00:00+00:00"),
    ("WE1b", "claranet-soho", "2023-12-22T16:00:00Z", [], "adr_letter", "due",
     "2024-02-16T16:00:00+00:00"),
    ("WE3", "infinity-group", "2026-04-02T17:10:00Z", [], "email_response", "due",
     "2026-04-14T16:30:00+00:00"),
    ("WE5a", "all-communications", "2026-12-24T11:00:00Z", [], "resolution_target", "due",
     "2027-01-12T17:30:00+00:00"),
    ("WE5b", "all-communications", "2026-12-24T11:00:00Z", [], "adr_letter", "due",
     "2027-02-04T11:00:00+00:00"),
    ("WE7a", "claranet-soho", "2026-08-31T10:00:00Z", [], "initial_response", "due",
     "2026-09-01T16:30:00+00:00"),
    ("WE7b", "claranet-soho", "2026-08-31T10:00:00Z", ["--region", "GB-SCT"], "initial_response",
     "due", "2026-09-01T10:00:00+00:00"),
    ("WE9a", "claranet-soho", "2026-04-01T09:00:00Z", [], "initial_response", "due",
     "2026-04-02T09:00:00+00:00"),
    ("WE9b", "claranet-soho", "2026-04-01T09:00:00Z", [], "adr_letter", "due",
     "2026-05-27T09:00:00+00:00"),
    ("WE9c", "claranet-soho", "2026-04-01T09:00:00Z", ["--event", "staff-reply@2026-04-02T09:00:00Z"],
     "daily_update", "next_due", "2026-04-07T16:30:00+00:00"),
]


@pytest.mark.parametrize(("vector", "provider", "received", "extra", "obligation", "field", "want"),
                         WORKED_EXAMPLES, ids=[row[0] for row in WORKED_EXAMPLES])
def test_worked_examples(capsys, vector, provider, received, extra, obligation, field, want):
    result = simulate(capsys, provider, received, *extra)
    assert result["obligations"][obligation][field] == want
    assert result["provider"] == provider
    assert result["received"] == received.replace("Z", "+00:00")


def sends(result: dict, template: str) -> list[str]:
    return [a["at"] for a in result["timeline"] if a["action"] == "send"
            and a.get("template") == template]


def actions(result: dict, action: str, obligation: str) -> list[str]:
    return [a["at"] for a in result["timeline"]
            if a["action"] == action and a.get("obligation") == obligation]


def test_unanswered_complaint_gets_its_adr_letter_at_the_threshold_once(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z")
    assert sends(result, "acknowledgement") == ["2026-04-01T09:00:00+00:00"]
    assert sends(result, "adr_letter") == ["2026-05-27T09:00:00+00:00"]
    assert result["obligations"]["adr_letter"]["met"] == "2026-05-27T09:00:00+00:00"
    times = [a["at"] for a in result["timeline"]]
    assert times == sorted(times), "the timeline is in time order"


def test_six_week_threshold_for_complaints_first_raised_from_8_april_2026(capsys):
    before = simulate(capsys, "halo-tech-group", "2026-04-07T10:00:00Z")
    after = simulate(capsys, "halo-tech-group", "2026-04-08T10:00:00Z")
    assert sends(before, "adr_letter") == ["2026-06-02T10:00:00+00:00"]  # 8 weeks
    assert sends(after, "adr_letter") == ["2026-05-20T10:00:00+00:00"]   # 6 weeks


def test_resolved_complaint_gets_no_adr_letter_unless_reopened(capsys):
    resolved = simulate(capsys, "infinity-group", "2026-04-01T09:00:00Z",
                        "--event", "resolved@2026-04-20T09:00:00Z")
    assert sends(resolved, "adr_letter") == []
    assert actions(resolved, "cancel", "adr_letter")
    reopened = simulate(capsys, "infinity-group", "2026-04-01T09:00:00Z",
                        "--event", "resolved@2026-04-20T09:00:00Z",
                        "--event", "reopened@2026-06-10T12:00:00Z")
    # The original clock continues: the threshold (27 May) passed while resolved, so the letter
    # goes at the reopening.
    assert sends(reopened, "adr_letter") == ["2026-06-10T12:00:00+00:00"]


@pytest.mark.parametrize("decision", ["vexatious", "out-of-jurisdiction"])
def test_staff_exception_cancels_the_adr_letter(capsys, decision):
    result = simulate(capsys, "all-communications", "2026-04-01T09:00:00Z",
                      "--event", f"{decision}@2026-04-10T09:00:00Z")
    assert sends(result, "adr_letter") == []
    [cancel] = [a for a in result["timeline"] if a["action"] == "cancel"
                and a.get("obligation") == "adr_letter"]
    assert decision in cancel["note"]


def test_deadlock_letter_replaces_the_adr_letter(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z",
                      "--event", "deadlock@2026-04-15T10:00:00Z")
    assert sends(result, "deadlock_letter") == ["2026-04-15T10:00:00+00:00"]
    assert sends(result, "adr_letter") == []
    assert result["obligations"]["adr_letter"]["met"] == "2026-04-15T10:00:00+00:00"


def test_deadlock_request_is_flagged_and_issued_when_the_decision_deadline_passes(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z",
                      "--event", "deadlock-request@2026-04-13T10:00:00Z")
    flags = [a for a in result["timeline"] if a["action"] == "flag"]
    assert flags and flags[0]["at"] == "2026-04-13T10:00:00+00:00"
    [letter] = sends(result, "deadlock_letter")
    assert letter > "2026-04-13T10:00:00+00:00" and letter in flags[0]["note"]
    assert sends(result, "adr_letter") == []


def test_daily_updates_go_out_automatically_unless_staff_updated_that_day(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z",
                      "--event", "staff-reply@2026-04-02T09:00:00Z",
                      "--until", "2026-04-10T00:00:00Z")
    # Thursday 2 April: the staff reply was the update. Good Friday and Easter Monday are
    # holidays; from Tuesday the template goes out before 17:30 local (16:30 UTC).
    assert sends(result, "update") == ["2026-04-07T16:00:00+00:00", "2026-04-08T16:00:00+00:00",
                                       "2026-04-09T16:00:00+00:00"]
    assert result["obligations"]["daily_update"]["met"] == "2026-04-02T09:00:00+00:00"


def test_agreed_cadence_replaces_daily_updates(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z",
                      "--event", "updates-agreed:weekly@2026-04-02T09:00:00Z",
                      "--until", "2026-04-24T00:00:00Z")
    assert sends(result, "update") == ["2026-04-09T08:30:00+00:00", "2026-04-16T08:30:00+00:00",
                                       "2026-04-23T08:30:00+00:00"]


def test_staff_are_reminded_before_the_deadline_and_it_escalates_when_missed(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z")
    # Initial response due Thursday 10:00 BST; two business hours before is Wednesday 16:30 BST.
    assert actions(result, "remind", "initial_response") == ["2026-04-01T15:30:00+00:00"]
    assert actions(result, "escalate", "initial_response") == ["2026-04-02T09:00:00+00:00"]
    [escalation] = [a for a in result["timeline"] if a["action"] == "escalate"]
    assert "Manager" in escalation["to"]


def test_a_timely_staff_reply_means_no_reminder_and_no_escalation(capsys):
    result = simulate(capsys, "claranet-soho", "2026-04-01T09:00:00Z",
                      "--event", "staff-reply@2026-04-01T11:00:00Z")
    assert actions(result, "remind", "initial_response") == []
    assert actions(result, "escalate", "initial_response") == []
    assert result["obligations"]["initial_response"]["met"] == "2026-04-01T11:00:00+00:00"


def test_ombudsman_acknowledgement_has_a_hard_limit_and_no_adr_letter(capsys):
    result = simulate(capsys, "communications-ombudsman", "2026-04-01T09:00:00Z")
    ack = result["obligations"]["acknowledgement"]
    assert ack["due"] == "2026-04-02T09:00:00+00:00"          # next working day, same clock time
    # 24 working hours (09:00-17:00): Wed 7h, Thu 8h, Good Friday and Easter Monday off, Tue 8h,
    # then 1h on Wednesday 8 April: 10:00 BST.
    assert ack["hard_limit"] == "2026-04-08T09:00:00+00:00"
    assert "adr_letter" not in result["obligations"]
    assert sends(result, "adr_letter") == []


def test_human_form_is_a_readable_table(capsys):
    assert main(["rules", "simulate", "--provider", "claranet-soho",
                 "--received", "2026-04-01T09:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "initial_response" in out and "adr_letter" in out and "when (UTC)" in out


@pytest.mark.parametrize("args", [
    ["--provider", "no-such-provider", "--received", "2026-04-01T09:00:00Z"],
    ["--provider", "claranet-soho", "--received", "2026-04-01T09:00:00Z", "--event", "party@2026"],
])
def test_bad_simulate_arguments_exit_2(capsys, args):
    assert main(["rules", "simulate", *args]) == 2


def test_simulate_agrees_an_acknowledgement_day_reply_is_not_an_update(capsys):
    result = simulate(capsys, "claranet-soho", "2026-11-16T09:00:00Z",
                      "--event", "staff-reply@2026-11-16T12:00:00Z", "--until",
                      "2026-11-18T00:00:00Z")
    assert sends(result, "update") == ["2026-11-17T17:00:00+00:00"]

