"""The data every customer letter is rendered with (templates see plain values only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.core.rules import ProviderRules, Scheme


def local_datetime_text(instant: datetime, timezone: str) -> str:
    """'Friday 22 December 2023 at 16:00' in the provider's local time."""
    local = instant.astimezone(ZoneInfo(timezone))
    return f"{local:%A} {local.day} {local:%B %Y} at {local:%H:%M}"


def local_date_text(instant: datetime, timezone: str) -> str:
    local = instant.astimezone(ZoneInfo(timezone))
    return f"{local.day} {local:%B %Y}"


def _scheme(scheme: Scheme | None) -> dict[str, Any] | None:
    if scheme is None:
        return None
    return {"id": scheme.id, "name": scheme.name, "web": scheme.web, "phone": scheme.phone,
            "email": scheme.email, "post": scheme.post, "free": scheme.free}


def letter_context(
    *,
    rules: ProviderRules,
    reference: str,
    customer_name: str,
    customer_address: str,
    subject: str,
    received_at: datetime,
    first_raised_at: datetime,
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
    return {
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
        "scheme": scheme,
        "adr": adr,
    }
