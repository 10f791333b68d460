"""Threading rules for bounces that return none of our headers: matched by who failed."""

from __future__ import annotations

from worker.core.message import ParsedMessage
from worker.core.threading import KnownCase, match_thread

CASE = KnownCase(case_id=7, reference="CLR-2026-000007", parties=frozenset({"ann@example.org"}))


def notice(subject: str) -> ParsedMessage:
    return ParsedMessage(message_id="<n@mx>", from_address="mailer-daemon@mx.example.net",
                         subject=subject)


def test_subject_reference_counts_when_a_party_failed() -> None:
    match = match_thread(notice("Undeliverable: [CLR-2026-000007] Your complaint"),
                         known_message_ids={}, cases_by_reference={CASE.reference: CASE},
                         automated=True, failed_recipients=("ann@example.org",))
    assert match.case_id == 7


def test_subject_reference_alone_does_not_let_a_bounce_join() -> None:
    match = match_thread(notice("Undeliverable: [CLR-2026-000007] Your complaint"),
                         known_message_ids={}, cases_by_reference={CASE.reference: CASE},
                         automated=True, failed_recipients=("someone.else@example.org",))
    assert match.case_id is None and match.quoted_reference == CASE.reference


def test_failed_recipient_finds_the_latest_case_of_that_party() -> None:
    match = match_thread(notice("failure notice"), known_message_ids={}, cases_by_reference={},
                         automated=True, failed_recipients=("ann@example.org",),
                         latest_case_of={"ann@example.org": 9})
    assert match.case_id == 9 and "ann@example.org" in match.reason
