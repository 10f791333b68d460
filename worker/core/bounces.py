"""Which of our recipients a bounce is about, and whether the failure is permanent."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.core.message import ParsedMessage

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w.-]+\.[a-z]{2,}", re.IGNORECASE)
_ENHANCED = re.compile(r"(?<![\d.])([245])\.\d{1,3}\.\d{1,3}(?![\d.])")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")


@dataclass(frozen=True, kw_only=True, slots=True)
class BounceReport:
    recipients: tuple[str, ...]
    permanent: bool
    reason: str


def analyse_bounce(msg: ParsedMessage) -> BounceReport:
    """Read a DSN's per-recipient fields, or a non-standard bounce's wording.

    Permanent when the status is 5.x.x (or an SMTP 5xx), temporary for 4.x.x; a failure
    notice that gives no code at all is taken as permanent, since it says delivery failed.
    """
    fields = {name: value for name, value in msg.report_fields}
    recipients: list[str] = []
    for name, value in msg.report_fields:
        if name in ("final-recipient", "original-recipient"):
            recipients += [a.lower() for a in _ADDRESS.findall(value)]
    for value in msg.header_values("x-failed-recipients"):
        recipients += [a.lower() for a in _ADDRESS.findall(value)]
    if not recipients:
        recipients = [a.lower() for name, value in msg.enclosed_headers if name == "to"
                      for a in _ADDRESS.findall(value)]
    evidence = " ".join(filter(None, (fields.get("status"), fields.get("diagnostic-code"))))
    evidence = evidence or msg.text[:4000]
    enhanced = _ENHANCED.search(evidence)
    code = enhanced or _SMTP_CODE.search(evidence)
    permanent = code is None or code.group(1) == "5"
    reason = (fields.get("diagnostic-code") or fields.get("status")
              or (code.group(0) if code else "delivery failed"))
    return BounceReport(recipients=tuple(dict.fromkeys(recipients)), permanent=permanent,
                        reason=reason[:300])
