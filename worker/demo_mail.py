"""Sample mail for the demo: complaints to all five providers, a follow-up, an out-of-office, a bounce."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid


def customer_mail(*, sender: str, name: str, to: str, subject: str, at: datetime,
                  text: str | None = None, html: str | None = None,
                  in_reply_to: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    """A message as a mail client would write it: plain text, HTML only, or both."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for key, value in (headers or {}).items():
        msg[key] = value
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    return msg.as_bytes()


def bounce(*, mta: str, to: str, failed_recipient: str, original: bytes, at: datetime) -> bytes:
    """A Postfix-style DSN (multipart/report) for a message we sent."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{mta}>"
    msg["To"] = to
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = make_msgid(domain=mta)
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(
        f"This is the mail system at host {mta}.\n\nI'm sorry to have to inform you that your "
        "message could not\nbe delivered to one or more recipients.\n\n"
        f"<{failed_recipient}>: host {mta} said: 550 5.1.1 User unknown\n")
    msg.make_mixed()
    msg.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"')
    status = EmailMessage(policy=SMTP)
    status.set_content(
        f"Reporting-MTA: dns; {mta}\n\nFinal-Recipient: rfc822; {failed_recipient}\n"
        "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n")
    status.replace_header("Content-Type", "message/delivery-status")
    msg.attach(status)
    headers_only = original.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    part = EmailMessage(policy=SMTP)
    part.set_payload(headers_only.decode("ascii", "replace"))
    part["Content-Type"] = "text/rfc822-headers"
    msg.attach(part)
    return msg.as_bytes()
