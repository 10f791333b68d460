"""`rules check`: the shipped files pass; deliberately broken files report every error at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import ROOT
from worker.cli import main

BROKEN = Path("tests/data/broken-rules")
SHIPPED = ("claranet-soho", "halo-tech-group", "infinity-group", "all-communications",
           "communications-ombudsman")


@pytest.fixture(autouse=True)
def in_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COMPLAINTS_WORKER_CONFIG", str(ROOT / "no-config-here.toml"))


def check(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, list[str], str]:
    code = main(["rules", "check", *paths])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def test_shipped_rule_files_pass_and_warn_about_unconfirmed_hours(capsys):
    code, err, out = check(capsys)
    assert code == 0, err
    for provider in SHIPPED:
        assert f"{provider}: OK" in out
    warnings = [line for line in err if "warning" in line]
    assert any(line.startswith("rules/all-communications.toml:") for line in warnings)
    assert any(line.startswith("rules/communications-ombudsman.toml:") for line in warnings)
    assert not any("claranet-soho" in line for line in warnings), "Claranet's hours are confirmed"


@pytest.mark.parametrize(("name", "expected"), [
    ("bad-hours.toml", [
        (6, "'holiday_region' must be one of GB-ENG, GB-SCT, GB-NIR, not 'GB-WAL'"),
        (10, "bad time in '25:00-26:00'"),
        (11, "intervals overlap in ['09:00-13:00', '12:00-17:00']"),
        (12, "interval '17:00-09:00' must open before it closes"),
        (13, "'thursday' must be a list of \"HH:MM-HH:MM\" strings"),
        (14, "bad interval '9am-5pm': write it as \"HH:MM-HH:MM\""),
        (15, "unknown key 'caturday'"),
        (18, "'not a date' is not a date like 2026-12-24"),
    ]),
    ("bad-obligations.toml", [
        (30, "'due' must be an inline table with exactly one of: business_hours, business_days, "
             "business_days_clock, days, weeks, minutes or \"regime\""),
        (39, "unknown unit 'fortnights' in 'due'"),
        (42, "unknown key 'colour'"),
        (50, "a repeat of zero would fire for ever"),
        (52, "unknown template 'no-such-template'"),
        (53, "unknown met_by 'telepathy'"),
        (61, "hard_limit can fall before the due time"),
        (63, "no stage 3 (there are 1)"),
        (71, "looser than regime floor: it requires the ADR letter at 6 weeks for complaints "
             "first raised from 2026-04-08"),
        (79, "refusal ground 'bored' is not allowed by regime floor"),
        (82, "exception 'out-of-jurisdiction' is not allowed by regime floor"),
    ]),
    ("missing-scheme.toml", [
        (7, "regime 'floor' requires an 'adr_letter' obligation"),
        (8, "no such file tests/data/broken-rules/schemes/no-such-scheme.toml"),
    ]),
])
def test_broken_rule_files_report_each_error_at_its_line(capsys, name: str, expected):
    code, err, _ = check(capsys, str(BROKEN / name))
    assert code == 2
    for line, message in expected:
        prefix = f"{BROKEN / name}:{line}: {message}"
        assert any(e.startswith(prefix) for e in err), f"missing: {prefix}\ngot:\n" + "\n".join(err)
    assert all(e.startswith(f"{BROKEN / name}:") for e in err)


def test_a_toml_syntax_error_is_reported_with_its_line(tmp_path: Path, capsys):
    bad = tmp_path / "syntax.toml"
    bad.write_text("[provider]\nid = \"syntax\"\nname = \n", encoding="utf-8")
    code, err, _ = check(capsys, str(bad))
    assert code == 2 and err[0].startswith(f"{bad}:3: invalid TOML")
