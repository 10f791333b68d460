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


# Every way _DEADLOCK can match starts with one of these words. Finding where they start in the
# lowered text (a lookahead, so none is skipped) and trying _DEADLOCK only there is twice as
# fast on a long complaint as a case-insensitive search trying every alternative everywhere.
_DEADLOCK_WORDS = re.compile(
    "(?=deadlock|ombudsman|adr|alternative dispute resolution|cisas|escalate|independent)")
# Characters that IGNORECASE matches to an ASCII letter but lower() does not map to one (or
# maps to two characters, which would shift positions): with any of them, search plainly.
_CASE_TRAPS = re.compile("[\u0130\u0131\u017f\u212a]")


def asks_for_deadlock(text: str) -> bool:
    """The customer asks for a deadlock letter or to take the complaint to the ombudsman."""
    if _CASE_TRAPS.search(text):
        return bool(_DEADLOCK.search(text))
    return any(_DEADLOCK.match(text, word.start())
               for word in _DEADLOCK_WORDS.finditer(text.lower()))


def still_unhappy(text: str) -> bool:
    """A reply to a resolved case saying it is not actually resolved."""
    return bool(_STILL_UNHAPPY.search(text))
