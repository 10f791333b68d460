"""What a customer's text asks for: the wording is found wherever it is, in any case."""

from __future__ import annotations

import pytest

from worker.core.customer_intent import asks_for_deadlock


@pytest.mark.parametrize("text, expected", [
    ("I want a deadlock letter.", True),
    ("Please escalate this to Ofcom now", True),
    ("I will ESCALATE the matter to the regulator", True),
    ("Send it to the Independent Adjudicator", True),
    ("I'll go to ADR.", True),
    ("my new address is below", False),
    ("This is deadlocked? No: deadlocks are fine", False),
    ("ombudſman", True),  # IGNORECASE matches the long s to s; lower() does not
    ("escalate this, the DEADLOCK of it", True),
    ("£10 and nothing about it", False),
])
def test_asks_for_deadlock_finds_the_wording_anywhere_in_any_case(text: str, expected: bool):
    assert asks_for_deadlock(text) is expected
    assert asks_for_deadlock("x" * 5000 + " " + text + " £") is expected
