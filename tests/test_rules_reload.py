"""Rule files are reloaded when they change; an invalid edit is rejected and the last good rules stay."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, ROOT, Worker, mailbox_for
from tests.test_intake_e2e import acks, complaint
from worker.cli import main
from worker.embedded import deliver_many

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)


@pytest.fixture
def own_rules(tmp_path: Path) -> Path:
    """A private copy of the rules folder that the test may edit."""
    folder = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", folder)
    return folder


def test_valid_edit_takes_effect_and_invalid_edit_keeps_last_good(
        tmp_path: Path, own_rules: Path, pymap, smtp, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]):
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    config_path = worker.config_path
    config_path.write_text(config_path.read_text().replace(
        f'rules = "{ROOT / "rules"}"', f'rules = "{own_rules}"'))
    worker = worker.restart()
    claranet = own_rules / "claranet-soho.toml"

    # A valid edit: the next acknowledgement carries the new wording.
    claranet.write_text(claranet.read_text().replace(
        "Our complaints team works from", "Our friendly complaints team works from"))
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1), T0)])
    worker.once(T0)
    assert "Our friendly complaints team" in acks(smtp)[0].message.get_body(("plain",)).get_content()

    # An invalid edit: rejected with an error in the log, the last good rules stay in force.
    good = claranet.read_text()
    claranet.write_text(good.replace('holiday_region = "GB-ENG"', 'holiday_region = "Narnia"'))
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(2), T0)])
    with caplog.at_level(logging.ERROR):
        worker.once(T0 + timedelta(minutes=1))
    assert "last good rules stay in force" in caplog.text
    assert "holiday_region" in caplog.text
    assert len(acks(smtp)) == 2, "mail is still acknowledged under the last good rules"
    assert "Our friendly complaints team" in acks(smtp)[1].message.get_body(("plain",)).get_content()

    assert main(["--config", str(config_path), "status", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)["rules"]
    assert rules["valid"] is False
    assert any("claranet-soho.toml" in p and "holiday_region" in p for p in rules["problems"])

    # Fixed again: accepted, and status is clean.
    claranet.write_text(good)
    worker.once(T0 + timedelta(minutes=2))
    assert main(["--config", str(config_path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rules"]["valid"] is True
    worker.close()


def test_template_edits_take_effect_only_once_checked(tmp_path: Path, pymap, smtp,
                                                      caplog: pytest.LogCaptureFixture):
    """A template edit is a rule change: a broken one is rejected and the running worker keeps
    sending the last good wording, rather than failing every message that needs the template."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates" / "emails", templates)
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    config_path = worker.config_path
    config_path.write_text(config_path.read_text().replace(
        f'templates = "{ROOT / "templates" / "emails"}"', f'templates = "{templates}"'))
    worker = worker.restart()
    ack = templates / "claranet-soho" / "acknowledgement.txt"
    good = ack.read_text()

    def body(n: int) -> str:
        return acks(smtp)[n].message.get_body(("plain",)).get_content()

    ack.write_text(good.replace("To help us look into", "So that we can look into"))
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1), T0)])
    worker.once(T0)
    assert "So that we can look into your complaint" in body(0)

    # Broken: a block left open. The complaint is still acknowledged, in the last good wording.
    ack.write_text(good.replace("{%- endblock %}", "").replace("To help us", "Broken, to help us"))
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(2), T0)])
    with caplog.at_level(logging.ERROR):
        worker.once(T0 + timedelta(minutes=1))
    assert "last good rules stay in force" in caplog.text
    assert "acknowledgement.txt" in caplog.text
    assert len(acks(smtp)) == 2, "the complaint is acknowledged despite the broken edit"
    assert "So that we can look into your complaint" in body(1)
    assert "Broken" not in body(1)

    # Mended: the new wording is used from the next message.
    ack.write_text(good.replace("To help us look into", "To help us investigate"))
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(3), T0)])
    worker.once(T0 + timedelta(minutes=2))
    assert "To help us investigate your complaint" in body(2)
    worker.close()
