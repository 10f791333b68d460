"""Build the bytes of an outgoing message; every header value is checked for injection here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

# Keep References bounded: the first id (thread root) and the most recent ones.
MAX_REFERENCES = 20


@dataclass(frozen=True, kw_only=True, slots=True)
class OutgoingMail:
    from_name: str
    from_address: str
    to: Sequence[str]
    subject: str
    message_id: str
    date: datetime
    text: str
    html: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # (filename, content type, bytes) of each attachment.
    attachments: Sequence[tuple[str, str, bytes]] = ()


def single_line(value: str, limit: int = 900) -> str:
    """Strip CR, LF and other control characters so no supplied text can start a new header."""
    cleaned = "".join(" " if ord(ch) < 32 or ch == "\x7f" else ch for ch in value)
    return " ".join(cleaned.split())[:limit]


def compose(mail: OutgoingMail) -> bytes:
    if mail.date.tzinfo is None:
        raise ValueError("date must be aware")
    msg = EmailMessage(policy=SMTP)
    local, _, domain = mail.from_address.partition("@")
    msg["From"] = Address(display_name=single_line(mail.from_name, 200), username=local,
                          domain=domain)
    msg["To"] = ", ".join(single_line(a, 320) for a in mail.to)
    msg["Subject"] = single_line(mail.subject)
    msg["Date"] = format_datetime(mail.date)
    msg["Message-ID"] = single_line(mail.message_id)
    if mail.in_reply_to:
        msg["In-Reply-To"] = single_line(mail.in_reply_to)
    references = list(dict.fromkeys(mail.references))
    if len(references) > MAX_REFERENCES:
        references = [references[0], *references[-(MAX_REFERENCES - 1):]]
    if references:
        msg["References"] = " ".join(single_line(r) for r in references)
    for name, value in mail.extra_headers.items():
        msg[name] = single_line(value)
    msg.set_content(mail.text, cte="quoted-printable")
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html", cte="quoted-printable")
    for filename, content_type, data in mail.attachments:
        maintype, _, subtype = content_type.partition("/")
        if not subtype or maintype in ("multipart", "message"):
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(data, maintype=maintype, subtype=subtype,
                           filename=single_line(filename, 200))
    return msg.as_bytes()
