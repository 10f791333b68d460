"""`config check`, `rules check`, `db upgrade` and the read commands, through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import ROOT, mailbox_for, write_config
from worker.cli import main


def good_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.toml",
        db_url=f"sqlite:///{tmp_path}/w.db",
        imap_port=1143,
        smtp_port=1025,
        mailboxes=[mailbox_for("claranet-soho")],
    )


def test_config_check_accepts_a_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--config", str(good_config(tmp_path)), "config", "check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_example_config_is_valid_when_its_secrets_are_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("SMTP_PASSWORD", "x")
    monkeypatch.setenv("CLARANET_IMAP_PASSWORD", "y")
    assert main(["--config", str(ROOT / "config.example.toml"), "config", "check"]) == 0


def test_config_check_lists_every_problem_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = tmp_path / "config.toml"
    path.write_text(
        "[worker]\n"  # 1
        'poll_interval_seconds = "often"\n'  # 2
        "[smtp]\n"  # 3
        'host = "mail"\n'  # 4
        'security = "maybe"\n'  # 5
        'colour = "blue"\n'  # 6
        "connections = 9\n"  # 7
        "[[mailboxes]]\n"  # 8
        'name = "a"\n'  # 9
        'rules = "claranet-soho"\n'  # 10
        'address = "not an address"\n'  # 11
        'host = "imap"\n'  # 12
        'password_env = "NOT_SET_ANYWHERE"\n'  # 13
        f'[paths]\nrules = "{ROOT / "rules"}"\ntemplates = "{ROOT / "templates/emails"}"\n',
        encoding="utf-8",
    )
    assert main(["--config", str(path), "config", "check"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"{path}:2: 'poll_interval_seconds' must be an integer" in lines
    assert f"{path}:5: 'security' must be one of tls, starttls, none, not 'maybe'" in lines
    assert f"{path}:6: unknown key 'colour'" in lines
    assert f"{path}:7: 'connections' must be at least 1 and at most 8, not 9" in lines
    assert any(line.startswith(f"{path}:11: invalid address") for line in lines)
    assert f"{path}:13: environment variable NOT_SET_ANYWHERE is not set" in lines


def test_config_check_reports_toml_syntax_errors_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "config.toml"
    path.write_text("[smtp]\nhost = \n", encoding="utf-8")
    assert main(["--config", str(path), "config", "check"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:2: invalid TOML")


def test_config_check_reports_unknown_provider_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write_config(
        tmp_path / "config.toml",
        db_url="sqlite:///x.db",
        imap_port=1,
        smtp_port=2,
        mailboxes=[mailbox_for("claranet-soho")],
    )
    path.write_text(path.read_text().replace('rules = "claranet-soho"', 'rules = "no-such"'))
    assert main(["--config", str(path), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "no rule file" in err and f"{path}:" in err


def test_rules_check_accepts_the_shipped_rules(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(ROOT)
    assert main(["rules", "check"]) == 0
    out = capsys.readouterr().out
    for provider in (
        "claranet-soho",
        "halo-tech-group",
        "infinity-group",
        "all-communications",
        "communications-ombudsman",
    ):
        assert f"{provider}: OK" in out


def test_rules_check_reports_bad_rule_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "regimes").mkdir()
    bad = tmp_path / "acme.toml"
    bad.write_text(
        "[provider]\n"  # 1
        'id = "acme"\n'  # 2
        'name = "Acme"\n'  # 3
        'reference_prefix = "acme"\n'  # 4
        'complaints_address = "complaints@acme.example"\n'  # 5
        'timezone = "Mars/Olympus"\n'  # 6
        'holiday_region = "GB-ENG"\n'  # 7
        'regime = "missing-regime"\n'  # 8
        'flavour = "x"\n'  # 9
        "[acknowledgement]\n"  # 10
        'next_steps = "We will reply."\n',
        encoding="utf-8",
    )
    assert main(["rules", "check", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}:4: must be 2 to 5 upper-case letters" in err
    assert f"{bad}:6: unknown timezone 'Mars/Olympus'" in err
    assert any(line.startswith(f"{bad}:8: no such file") for line in err)
    assert f"{bad}:9: unknown key 'flavour'" in err


def test_once_refuses_an_unmigrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--config", str(good_config(tmp_path)), "once"]) == 1
    assert "db upgrade" in capsys.readouterr().err


def test_db_upgrade_then_read_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = str(good_config(tmp_path))
    assert main(["--config", config, "db", "upgrade"]) == 0
    assert "latest schema" in capsys.readouterr().out
    assert main(["--config", config, "cases", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--config", config, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["mailboxes"][0]["name"] == "claranet-soho"
    assert status["outbox"]["pending"] == 0
    assert main(["--config", config, "cases", "show", "CLR-2026-999999"]) == 1


def test_naive_now_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(good_config(tmp_path)), "once", "--now", "2026-01-01T09:00"])
    assert exit_info.value.code == 2
    assert "UTC offset" in capsys.readouterr().err
