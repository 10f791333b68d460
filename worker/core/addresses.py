"""Email address checks shared by config validation and message handling (syntax only, no DNS)."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


def address_problem(address: str) -> str | None:
    """Why `address` cannot be mailed, or None when it is a valid addr-spec.

    Deliverability (DNS) is never checked here: the core must stay free of I/O, and a
    complaint must never be refused because a DNS lookup failed.
    """
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
