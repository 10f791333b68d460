"""Attachments of a stored message, as bytes, to forward to staff or relay to a customer."""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from worker.core.compose import single_line

# A relay or notification never carries more than this in attachments.
MAX_TOTAL_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class AttachmentData:
    filename: str
    content_type: str
    data: bytes


def extract_attachments(raw: bytes, *, limit: int = MAX_TOTAL_BYTES) -> tuple[AttachmentData, ...]:
    """Every part with a filename or an `attachment` disposition, decoded, up to `limit` bytes."""
    try:
        msg = message_from_bytes(raw, policy=policy.default)
    except Exception:
        return ()
    found: list[AttachmentData] = []
    total = 0
    for part in msg.walk():
        if part.is_multipart() or not isinstance(part, EmailMessage):
            continue
        try:
            filename = part.get_filename()
            disposition = part.get_content_disposition()
            payload = part.get_payload(decode=True)
        except Exception:
            continue
        if not (filename or disposition == "attachment") or not isinstance(payload, bytes):
            continue
        total += len(payload)
        if total > limit:
            break
        found.append(AttachmentData(
            filename=single_line(filename or "attachment", 200),
            content_type=part.get_content_type(), data=payload))
    return tuple(found)
