"""The shipped templates as the worker renders them (TemplateRenderer, the real rule files)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.harness import ROOT
from worker.adapters.rules import load_rule_set
from worker.adapters.templates import TemplateRenderer
from worker.core.letters import letter_context

RULES = load_rule_set(ROOT / "rules").providers


def acknowledgement(renderer: TemplateRenderer, reference: str, received: datetime) -> str:
    rules = RULES["claranet-soho"]
    context = letter_context(rules=rules, reference=reference, customer_name="Ann Example",
                             customer_address="ann@example.com", subject="No broadband",
                             received_at=received, first_raised_at=received)
    return renderer.render(rules.id, rules.acknowledgement_template, context).text


def paragraph(text: str, start: str) -> list[str]:
    return next(p for p in text.split("\n\n") if p.startswith(start)).splitlines()


def test_each_letter_wraps_its_own_values_at_72_columns() -> None:
    """Wrapped paragraphs are remembered between letters: each must still carry its own case."""
    renderer = TemplateRenderer(ROOT / "templates" / "emails")
    first = acknowledgement(renderer, "CLR-2026-000001", datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    second = acknowledgement(renderer, "CLR-2026-004321", datetime(2026, 11, 9, 15, 30, tzinfo=UTC))
    for text, reference, raised in ((first, "CLR-2026-000001", "2 March 2026"),
                                    (second, "CLR-2026-004321", "9 November 2026")):
        flowing = " ".join(text.split())
        assert f"Please keep {reference} in the subject line" in flowing
        assert raised in flowing
        keep = paragraph(text, "Please keep")
        assert len(keep) > 1 and max(map(len, keep)) <= 72
        assert max(len(line) for line in text.splitlines()) <= 76
    assert "000001" not in second and "004321" not in first
    # Paragraphs without a case's values come out the same in both.
    assert paragraph(first, "Thank you") == paragraph(second, "Thank you")
