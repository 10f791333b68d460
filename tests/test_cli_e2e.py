"""The command line on a real mailbox: `once`, the read commands, and `run` stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, ROOT, mailbox_for, write_config
from tests.test_intake_e2e import complaint
from worker.cli import main
from worker.embedded import deliver_many

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]


def test_once_then_cases_and_status(tmp_path: Path, pymap, smtp, capsys: pytest.CaptureFixture[str]):
    config = str(write_config(tmp_path / "config.toml", db_url=f"sqlite:///{tmp_path}/w.db",
                              imap_port=pymap.port, smtp_port=smtp.port,
                              mailboxes=[mailbox_for("claranet-soho")]))
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD,
                 [(complaint(1, sender="ann@example.org"), datetime(2026, 4, 1, 9, tzinfo=UTC))])
    assert main(["--config", config, "db", "upgrade"]) == 0
    assert main(["--config", config, "once", "--now", "2026-04-01T09:00:05Z"]) == 0
    assert "1 new case(s)" in capsys.readouterr().out

    assert main(["--config", config, "cases", "list", "--json"]) == 0
    [case] = json.loads(capsys.readouterr().out)
    assert case["customer"] == "ann@example.org" and case["status"] == "open"

    assert main(["--config", config, "cases", "show", case["reference"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["address"] for p in shown["parties"]] == ["ann@example.org"]
    assert [m["direction"] for m in shown["messages"]] == ["in", "out"]
    assert shown["messages"][0]["text"].strip() == "My service has failed (1)."
    assert case["reference"] in shown["messages"][1]["text"]
    assert [e["kind"] for e in shown["events"]] == [
        "complaint_received", "timer_planned", "timer_planned", "timer_planned", "timer_planned",
        "email_queued", "staff_not_notified", "email_sent"]
    # Received Wednesday 1 April 2026, 10:00 BST (RULES-RESEARCH.md WE9a, WE9b, WE9c): the
    # reminder two business hours before the initial response, the update half an hour
    # before Thursday's 17:30 BST close, the ADR letter at eight weeks.
    assert [(t["rule"], t["kind"], t["due_at"]) for t in shown["timers"]] == [
        ("initial_response", "reminder", "2026-04-01T15:30:00+00:00"),
        ("initial_response", "due", "2026-04-02T09:00:00+00:00"),
        ("daily_update", "due", "2026-04-02T16:00:00+00:00"),
        ("adr_letter", "due", "2026-05-27T09:00:00+00:00"),
    ]
    assert all(t["promised"] for t in shown["timers"])
    assert shown["events"][0]["detail"]["classification"] == "human"

    assert main(["--config", config, "cases", "show", case["reference"]]) == 0
    human = capsys.readouterr().out
    assert "audit trail:" in human and "complaint_received" in human

    assert main(["--config", config, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["mailboxes"][0]["last_success_at"] == "2026-04-01T09:00:05+00:00"
    assert status["mailboxes"][0]["backlog"] == 0
    assert status["outbox"]["sent"] == 1 and status["quarantine"]["total"] == 0


def test_run_acknowledges_new_mail_and_stops_on_sigterm(tmp_path: Path, pymap, smtp):
    config = write_config(tmp_path / "config.toml", db_url=f"sqlite:///{tmp_path}/w.db",
                          imap_port=pymap.port, smtp_port=smtp.port,
                          mailboxes=[mailbox_for("claranet-soho")],
                          worker={"poll_interval_seconds": 1})
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "worker", "--config", str(config), "run"],
                               cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1), None)])
        [ack] = smtp.wait_for(1, timeout=30)
        assert ack.message["X-Complaints-Worker-Purpose"] == "acknowledgement"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "stopping" in stderr
