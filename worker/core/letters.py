"""The data every customer letter is rendered with (templates see plain values only)."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.core.rules import ProviderRules, Scheme


def local_datetime_text(instant: datetime, timezone: str) -> str:
    """'Friday 22 December 2023 at 16:00' in the provider's local time."""
    local = instant.astimezone(ZoneInfo(timezone))
    return f"{local:%A} {local.day} {local:%B %Y} at {local:%H:%M}"


def local_date_text(instant: datetime, timezone: str) -> str:
    return _date_text(instant.astimezone(ZoneInfo(timezone)).date())


def _date_text(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def _scheme(scheme: Scheme | None) -> dict[str, Any] | None:
    if scheme is None:
        return None
    return {"id": scheme.id, "name": scheme.name, "web": scheme.web, "phone": scheme.phone,
            "email": scheme.email, "post": scheme.post, "free": scheme.free}


def add_months(day: date, months: int) -> date:
    """The same day `months` later; the 29th-31st fall back to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


def letter_context(
    *,
    rules: ProviderRules,
    reference: str,
    customer_name: str,
    customer_address: str,
    subject: str,
    received_at: datetime,
    first_raised_at: datetime,
    sent_at: datetime | None = None,
    reopen_until: datetime | None = None,
) -> dict[str, Any]:
    scheme = _scheme(rules.scheme)
    adr = None
    if rules.regime is not None:
        first_raised_local = first_raised_at.astimezone(ZoneInfo(rules.timezone)).date()
        adr = {
            "threshold_weeks": rules.regime.adr_threshold_weeks(first_raised_local),
            "referral_window_months": rules.regime.referral_window_months,
            "scheme": scheme,
        }
    letter_day = (sent_at or received_at).astimezone(ZoneInfo(rules.timezone)).date()
    months = rules.regime.referral_window_months if rules.regime else 12
    letter = {
        "date_local": f"{letter_day.day} {letter_day:%B %Y}",
        "referral_deadline_local": _date_text(add_months(letter_day, months)),
    }
    return {
        "letter": letter,
        "reference": reference,
        "provider": {"id": rules.id, "name": rules.name,
                     "complaints_address": rules.complaints_address,
                     "contact_point": rules.contact_point},
        "customer": {"name": customer_name, "address": customer_address},
        "complaint": {
            "subject": subject,
            "received_local": local_datetime_text(received_at, rules.timezone),
            "first_raised_local": local_date_text(first_raised_at, rules.timezone),
        },
        "next_steps": rules.next_steps,
        "reopen_until_local": local_date_text(reopen_until, rules.timezone) if reopen_until else "",
        "scheme": scheme,
        "adr": adr,
    }
