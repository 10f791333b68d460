"""What a customer's new text asks for, where the rules give it consequences.

Deliberately simple and visible: a match only flags the message to staff (who decide), or
reopens a case the customer says is still not right; it never closes or decides anything.
"""

from __future__ import annotations

import re

_DEADLOCK = re.compile(
    r"\bdeadlock\b|\bombudsman\b|\bADR\b|alternative dispute resolution|\bCISAS\b"
    r"|\bescalate\b.{0,40}\b(?:regulator|ofcom)\b|\bindependent (?:assessor|adjudicat\w*)",
    re.IGNORECASE)
_STILL_UNHAPPY = re.compile(
    r"\bstill\b|\bnot (?:happy|satisfied|resolved|fixed|sorted|working)\b|\bunhappy\b"
    r"|\bdissatisfied\b|\breopen\b|\bhasn'?t been (?:fixed|resolved|sorted)\b"
    r"|\b(?:is|isn'?t|is not) (?:fixed|resolved|sorted)\b",
    re.IGNORECASE)


def asks_for_deadlock(text: str) -> bool:
    """The customer asks for a deadlock letter or to take the complaint to the ombudsman."""
    return bool(_DEADLOCK.search(text))


def still_unhappy(text: str) -> bool:
    """A reply to a resolved case saying it is not actually resolved."""
    return bool(_STILL_UNHAPPY.search(text))
