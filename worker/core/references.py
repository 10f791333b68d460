"""Case references such as CLR-2026-000123, and finding them in a subject line."""

from __future__ import annotations

import re

_IN_SUBJECT = re.compile(r"\[([A-Z]{2,5}-\d{4}-\d{6,})\]")


def format_reference(prefix: str, year: int, number: int) -> str:
    return f"{prefix}-{year}-{number:06d}"


def references_in_subject(subject: str) -> tuple[str, ...]:
    """Every bracketed case reference in `subject`, in order of appearance, without repeats."""
    return tuple(dict.fromkeys(_IN_SUBJECT.findall(subject)))


def tagged_subject(reference: str, subject: str) -> str:
    """`[REF] subject`, without stacking the tag when the subject already carries it."""
    tag = f"[{reference}]"
    cleaned = " ".join(subject.replace(tag, " ").split())
    return f"{tag} {cleaned}".strip()


def without_references(subject: str) -> str:
    """The subject with every bracketed case reference removed (a case's own subject line)."""
    return " ".join(_IN_SUBJECT.sub(" ", subject).split())
