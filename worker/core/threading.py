"""Which case a message belongs to: by Message-ID first, then by [REF] only from a party to that case.

No fuzzy subject matching: two customers with the same subject are two cases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worker.core.message import ParsedMessage
from worker.core.references import references_in_subject

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def candidate_ids(msg: ParsedMessage, *, automated: bool) -> tuple[str, ...]:
    """The Message-IDs that may thread `msg`, nearest first."""
    if not automated:
        return msg.thread_ids
    enclosed = tuple(
        token for name, value in msg.enclosed_headers if name == "message-id"
        for token in _MESSAGE_ID.findall(value))
    return tuple(dict.fromkeys((*msg.thread_ids, *enclosed)))


@dataclass(frozen=True, kw_only=True, slots=True)
class KnownCase:
    """What threading needs to know about a case quoted in a subject line."""

    case_id: int
    reference: str
    parties: frozenset[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class ThreadMatch:
    case_id: int | None
    reason: str
    # A reference the sender quoted but may not use (not a party): kept for staff to see.
    quoted_reference: str | None = None


def match_thread(
    msg: ParsedMessage,
    *,
    known_message_ids: Mapping[str, int],
    cases_by_reference: Mapping[str, KnownCase],
    staff: frozenset[str] = frozenset(),
    automated: bool = False,
    failed_recipients: Sequence[str] = (),
    latest_case_of: Mapping[str, int] | None = None,
) -> ThreadMatch:
    """Match `msg` to a case.

    `known_message_ids` maps every Message-ID we stored or sent (among the ones this
    message mentions) to its case; `cases_by_reference` holds the cases whose references
    appear in the subject. Automated mail may also be matched by the message it encloses
    (a bounce returns our message's headers); a person's mail may not, or anyone could join
    a case by attaching someone else's acknowledgement.

    A bounce that returns none of our headers is matched by who failed (`failed_recipients`):
    through a [REF] in its subject when one of them is a party to that case, else to the
    latest case each is a party to (`latest_case_of`), which is where our mail went.
    """
    for message_id in candidate_ids(msg, automated=automated):
        case_id = known_message_ids.get(message_id)
        if case_id is not None:
            return ThreadMatch(case_id=case_id, reason=f"In-Reply-To/References {message_id}")
    sender = msg.from_address or ""
    quoted: str | None = None
    for reference in references_in_subject(msg.subject):
        case = cases_by_reference.get(reference)
        if case is None:
            continue
        if sender in case.parties or sender in staff:
            return ThreadMatch(case_id=case.case_id, reason=f"subject [{reference}] from a party")
        failed = next((a for a in failed_recipients if a in case.parties), None)
        if failed is not None:
            return ThreadMatch(case_id=case.case_id,
                               reason=f"subject [{reference}], a bounce of mail to the party {failed}")
        quoted = quoted or reference
    for address in failed_recipients:
        case_id = (latest_case_of or {}).get(address)
        if case_id is not None:
            return ThreadMatch(case_id=case_id,
                               reason=f"a bounce of mail to {address}, a party to this case")
    if quoted is not None:
        return ThreadMatch(
            case_id=None, quoted_reference=quoted,
            reason=f"subject quotes [{quoted}] but the sender is not a party to that case",
        )
    return ThreadMatch(case_id=None, reason="no known Message-ID or case reference")
