"""Is a message that claims to come from staff really from staff?

Accepted only when it answers one of that case's staff notifications (their Message-IDs are
unguessable), or when an Authentication-Results header added by one of our trusted servers
shows DKIM or DMARC passing for the staff member's own domain. A From header alone proves
nothing: anything else claiming to be staff is customer mail, and a security event.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from worker.core.addresses import domain_of
from worker.core.message import ParsedMessage

_RESULT = re.compile(r"\b(dkim|dmarc)\s*=\s*(\w+)([^;]*)", re.IGNORECASE)
_PROPERTY = re.compile(r"\bheader\.(?:d|i|from)\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True, slots=True)
class StaffCheck:
    # The sender is in the mailbox's staff list.
    claims_staff: bool
    # How the claim was proven, or None when it was not.
    proven_by: str | None

    @property
    def authenticated(self) -> bool:
        return self.claims_staff and self.proven_by is not None


def check_staff(msg: ParsedMessage, *, staff: Collection[str], notification_ids: Collection[str],
                trusted_authserv_ids: Collection[str]) -> StaffCheck:
    sender = msg.from_address or ""
    if sender not in staff:
        return StaffCheck(claims_staff=False, proven_by=None)
    answered = [mid for mid in msg.thread_ids if mid in notification_ids]
    if answered:
        return StaffCheck(claims_staff=True, proven_by=f"replies to notification {answered[0]}")
    proof = authentication_pass(msg, domain=domain_of(sender), trusted=trusted_authserv_ids)
    return StaffCheck(claims_staff=True, proven_by=proof)


def authentication_pass(msg: ParsedMessage, *, domain: str,
                        trusted: Collection[str]) -> str | None:
    """'dkim=pass (header.d=example.com) by mx.example.net' when a trusted server says so."""
    trusted_ids = {t.lower() for t in trusted}
    for header in msg.header_values("authentication-results"):
        authserv_id, _, results = header.partition(";")
        server = authserv_id.strip().split()[0].lower() if authserv_id.strip() else ""
        if server not in trusted_ids:
            continue
        for method, verdict, properties in _RESULT.findall(results):
            if verdict.lower() != "pass":
                continue
            for value in _PROPERTY.findall(properties):
                found = value.rpartition("@")[2].lower().rstrip(".")
                if found == domain:
                    return f"{method.lower()}=pass ({value}) by {server}"
    return None
