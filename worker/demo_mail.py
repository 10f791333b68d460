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


def bounce(*, mta: str, to: str, failed_recipient: str, original: bytes, at: datetime,
           status: str = "5.1.1", diagnostic: str = "550 5.1.1 User unknown") -> bytes:
    """A Postfix-style DSN (multipart/report) returning the headers of a message we sent."""
    boundary = "dsn-boundary-0001"
    original_headers = original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode(
        "ascii", "replace")
    text = f"""\
From: Mail Delivery System <MAILER-DAEMON@{mta}>
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: {format_datetime(at)}
Message-ID: {make_msgid(domain=mta)}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {mta}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{failed_recipient}>: host {mta} said: {diagnostic}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {mta}

Final-Recipient: rfc822; {failed_recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--{boundary}
Content-Type: text/rfc822-headers

{original_headers}

--{boundary}--
"""
    return text.replace("\n", "\r\n").encode("utf-8")
