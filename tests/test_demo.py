"""`make demo` tells the whole story: it must run, and the story must hold."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from tests.harness import ROOT
from worker.demo import run_demo


def test_demo_walks_five_providers_through_ten_weeks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    assert run_demo(out=out, workdir=tmp_path / "work", weeks=10) == 0
    printed = capsys.readouterr().out
    sent = [message_from_bytes(p.read_bytes(), policy=default) for p in sorted(out.glob("*.eml"))]
    purposes = [m["X-Complaints-Worker-Purpose"] for m in sent]
    cases = {m["X-Complaints-Worker-Case"].split("-")[0] for m in sent}
    assert cases == {"CLR", "HALO", "INF", "ALLC", "CO"}
    assert purposes.count("acknowledgement") == 5
    assert {"relay", "update", "reminder", "escalation", "resolution", "deadlock-letter"} <= set(
        purposes)
    adr = sorted(m["X-Complaints-Worker-Case"] for m in sent
                 if m["X-Complaints-Worker-Purpose"] == "adr-letter")
    # Still open at six weeks: Claranet, Halo and the reopened Infinity case; All Communications
    # had its deadlock letter and the Ombudsman's own procedure has none.
    assert [ref.split("-")[0] for ref in adr] == ["CLR", "HALO", "INF"]
    assert "Mary is still unhappy" in printed and "== Cases after the story ==" in printed
