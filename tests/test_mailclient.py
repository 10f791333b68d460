"""A real mail client (NeoMutt) answers a staff notification: the reply the worker must understand.

NeoMutt runs on a pseudo-terminal with no one at the keyboard (see tests/mailclient.py) and
sends to the embedded SMTP server. Without NeoMutt these tests skip, except under CI=true,
where they fail: CI installs it. :func:`mutt_style_reply`, the stand-in for machines without
NeoMutt, is checked against the real thing here too.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.mailclient import (
    MuttError,
    mutt_available,
    mutt_binary,
    mutt_reply,
    mutt_style_reply,
    reply_shape,
)
from worker.core.compose import OutgoingMail, compose
from worker.embedded import EmbeddedSmtpServer

IN_CI = os.environ.get("CI", "").lower() == "true"

NOTIFICATION_ID = "<3f2a9c0d5e8b4f6a9d1c2b3a4e5f6a7b@claranetsoho.co.uk>"
SUBJECT = "[CLR-2026-000001] New complaint: Broadband down"
STAFF = "Team Leader <teamleader@claranetsoho.co.uk>"
BODY = [
    "#note checking with engineers",
    "",
    "Hello Sarah, an engineer will visit tomorrow.",
    "",
    "-- ",
    "Team Leader",
]
NOTIFICATION_TEXT = """A new complaint has arrived for Claranet Soho.

From:      Sarah Jones <sarah.jones@example.net>
Received:  Mon 5 Jan 2026 09:29

---------------------------------------------------------------------
My broadband has been down since Friday.
> I rang on Saturday and was promised a call back.
---------------------------------------------------------------------

Case CLR-2026-000001
  Status:        open
  Stage:         1

Reply to this email to answer the customer.
"""


def require_mutt() -> str:
    """The client's path; skip without one, fail under CI=true (CI installs neomutt)."""
    reason = mutt_available()
    if reason:
        if IN_CI:
            pytest.fail(f"required under CI=true: {reason}")
        pytest.skip(reason)
    binary = mutt_binary()
    assert binary is not None
    return binary


def notification(
    *,
    subject: str = SUBJECT,
    text: str = NOTIFICATION_TEXT,
    from_name: str = "Claranet Soho Complaints",
    date: datetime | None = None,
    references: tuple[str, ...] = (),
    reply_to: str | None = None,
) -> bytes:
    """A staff notification as the worker composes it (text and HTML, quoted-printable)."""
    headers = {
        "X-Complaints-Worker-Case": "CLR-2026-000001",
        "X-Complaints-Worker-Purpose": "staff-notification",
        "Auto-Submitted": "auto-replied",
        "X-Auto-Response-Suppress": "All",
    }
    if reply_to:
        headers["Reply-To"] = reply_to
    return compose(
        OutgoingMail(
            from_name=from_name,
            from_address="complaints@claranetsoho.co.uk",
            to=["teamleader@claranetsoho.co.uk"],
            subject=subject,
            message_id=NOTIFICATION_ID,
            date=date or datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
            text=text,
            html="<p>" + text.replace("\n", "<br>\n") + "</p>",
            in_reply_to=references[-1] if references else None,
            references=references,
            extra_headers=headers,
        )
    )


def test_staff_reply_written_by_a_real_mail_client(smtp: EmbeddedSmtpServer, tmp_path: Path) -> None:
    require_mutt()
    started = time.monotonic()
    mutt_reply(
        notification(),
        from_address=STAFF,
        body_lines=BODY,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        workdir=tmp_path / "mutt",
    )
    [mail] = smtp.wait_for(1, timeout=5)
    assert time.monotonic() - started < 10
    assert len(smtp.received) == 1

    assert mail.mail_from == "teamleader@claranetsoho.co.uk"
    assert mail.rcpt_tos == ("complaints@claranetsoho.co.uk",)
    reply = mail.message
    assert reply["In-Reply-To"] == NOTIFICATION_ID
    assert str(reply["References"]).split() == [NOTIFICATION_ID]
    assert str(reply["Subject"]).startswith("Re: [CLR-2026-000001]")
    assert reply["Subject"] == f"Re: {SUBJECT}"
    assert reply["From"] == STAFF
    assert reply.get_content_type() == "text/plain"

    lines = reply.get_content().split("\n")
    # Typed above the quote (top-posting), then NeoMutt's attribution and "> " quoting of
    # the text/plain part, the original's own "> " line quoted once more.
    assert lines[: len(BODY)] == BODY
    assert lines[len(BODY)] == ""
    attribution = lines[len(BODY) + 1]
    assert attribution == "On Mon, Jan 05, 2026 at 09:30:00AM +0000, Claranet Soho Complaints wrote:"
    assert attribution.endswith("wrote:")
    quoted = lines[len(BODY) + 2 :]
    assert quoted[-1] == ""  # the body ends with a line break
    assert quoted[:-1] == [f"> {line}" for line in NOTIFICATION_TEXT.rstrip("\n").split("\n")]
    assert "> > I rang on Saturday and was promised a call back." in quoted
    assert b"\r\n> A new complaint has arrived for Claranet Soho.\r\n" in mail.raw


@dataclass(frozen=True, kw_only=True)
class Variant:
    body: list[str]
    notification: dict[str, Any] = field(default_factory=dict)
    from_address: str = STAFF
    send_charset: str = "utf-8"
    quote: bool = True


VARIANTS = {
    "notification": Variant(body=BODY),
    "thread-reply-to-non-ascii": Variant(
        notification={
            "subject": "Re: [CLR-2026-000001] Customer reply: Café wifi — still down",
            "from_name": "Cláranet Soho Complaints",
            "text": "Zoë wrote again:\n> it is still down\n\ntrailing space here  \n",
            "date": datetime(2026, 7, 6, 17, 5, 9, tzinfo=timezone(timedelta(hours=-5))),
            "references": ("<root@example.net>", "<second@claranetsoho.co.uk>"),
            "reply_to": "Complaints desk <desk@claranetsoho.co.uk>",
        },
        body=["Hello Zoë,", "", "an engineer is on the way — £0 to pay."],
        from_address="Zoë Léader <zl@claranetsoho.co.uk>",
    ),
    "stock-send-charset": Variant(
        notification={"text": "Sarah wrote:\nÇa ne marche pas.\n"},
        body=["Thanks, £10 credit applied."],
        send_charset="us-ascii:iso-8859-1:utf-8",
    ),
    "no-quote": Variant(body=["#assign tl@claranetsoho.co.uk"], quote=False),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_mutt_style_reply_matches_the_real_client(
    name: str, smtp: EmbeddedSmtpServer, tmp_path: Path
) -> None:
    binary = require_mutt()
    variant = VARIANTS[name]
    original = notification(**variant.notification)

    mutt_reply(
        original,
        from_address=variant.from_address,
        body_lines=variant.body,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        workdir=tmp_path / "mutt",
        quote=variant.quote,
        send_charset=variant.send_charset,
    )
    [mail] = smtp.wait_for(1, timeout=5)
    fake = mutt_style_reply(
        original, variant.from_address, variant.body, quote=variant.quote, send_charset=variant.send_charset
    )

    real_shape, fake_shape = reply_shape(mail.raw), reply_shape(fake)
    if os.path.basename(binary) != "neomutt":
        # Mutt's Message-IDs look different; the fallback mirrors NeoMutt.
        del real_shape["message_id_format"], fake_shape["message_id_format"]
    assert real_shape == fake_shape
    assert real_shape["date_format"] is True


def test_mutt_style_reply_without_the_client() -> None:
    now = datetime(2026, 1, 6, 14, 3, 7, tzinfo=UTC)
    raw = mutt_style_reply(notification(), STAFF, BODY, now=now)

    head, _, body = raw.partition(b"\r\n\r\n")
    names = [line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if not line.startswith(b" ")]
    assert names == [
        "Date", "From", "To", "Subject", "Message-ID", "References",
        "MIME-Version", "Content-Type", "Content-Disposition", "In-Reply-To",
    ]
    assert head.startswith(b"Date: Tue, 06 Jan 2026 14:03:07 +0000\r\n")
    assert re.search(rb"\r\nMessage-ID: <20260106140307\.[a-z0-9]{16}@claranetsoho\.co\.uk>\r\n", head)
    assert b"\r\nTo: Claranet Soho Complaints <complaints@claranetsoho.co.uk>\r\n" in head
    assert b"\r\nSubject: Re: " + SUBJECT.encode() + b"\r\n" in head
    assert b"\r\nIn-Reply-To: " + NOTIFICATION_ID.encode() in head
    assert b"\r\nContent-Type: text/plain; charset=utf-8\r\n" in head
    assert b"User-Agent" not in head  # NeoMutt's $user_agent is off by default

    expected = [
        *BODY,
        "",
        "On Mon, Jan 05, 2026 at 09:30:00AM +0000, Claranet Soho Complaints wrote:",
        *(f"> {line}" for line in NOTIFICATION_TEXT.rstrip("\n").split("\n")),
    ]
    assert body == "".join(line + "\r\n" for line in expected).encode()
    shape = reply_shape(raw)
    assert shape["date_format"] is True and shape["message_id_format"] is True


def test_mutt_style_reply_encodes_like_neomutt() -> None:
    """Byte for byte what NeoMutt 20220429 sent for this (B or Q, whichever is shorter)."""
    original = notification(
        subject="[CLR-2026-000001] Café down", from_name="Cláranet", reply_to="Zoë <z@example.net>"
    )
    raw = mutt_style_reply(
        original,
        "Zoë Léader <zl@claranetsoho.co.uk>",
        ["Très bien"],
        send_charset="us-ascii:iso-8859-1:utf-8",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nFrom: =?utf-8?B?Wm/DqyBMw6lhZGVy?= <zl@claranetsoho.co.uk>\r\n" in head
    assert b"\r\nTo: =?utf-8?Q?Zo=C3=AB?= <z@example.net>\r\n" in head  # a tie goes to Q
    assert b"\r\nSubject: Re: [CLR-2026-000001] =?utf-8?B?Q2Fmw6k=?= down\r\n" in head
    # The body takes the first $send_charset that fits; headers prefer utf-8.
    assert b"\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" in head
    assert b"\r\nContent-Transfer-Encoding: 8bit\r\n" in head
    attribution = "On Mon, Jan 05, 2026 at 09:30:00AM +0000, Cláranet wrote:"
    assert body.startswith(f"Très bien\r\n\r\n{attribution}\r\n".encode("latin-1"))


@pytest.mark.parametrize("fault", ["refused", "down"])
def test_mutt_reply_fails_fast_when_smtp_fails(fault: str, smtp: EmbeddedSmtpServer, tmp_path: Path) -> None:
    require_mutt()
    if fault == "refused":
        smtp.fail_next(1, 554, "5.7.1 Rejected (simulated)")
    else:
        smtp.set_down(True)
    started = time.monotonic()
    with pytest.raises(MuttError, match="did not send the reply"):
        mutt_reply(
            notification(), from_address=STAFF, body_lines=BODY,
            smtp_host=smtp.host, smtp_port=smtp.port, workdir=tmp_path / "mutt",
        )
    assert time.monotonic() - started < 10
    assert smtp.received == []


def test_mutt_reply_is_killed_when_it_hangs(tmp_path: Path) -> None:
    require_mutt()
    # Accepts connections (the kernel's backlog) but never sends a greeting.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        started = time.monotonic()
        with pytest.raises(MuttError, match=r"did not finish within 2\.0s and was killed"):
            mutt_reply(
                notification(), from_address=STAFF, body_lines=BODY,
                smtp_host="127.0.0.1", smtp_port=silent.getsockname()[1],
                workdir=tmp_path / "mutt", timeout=2.0,
            )
    assert time.monotonic() - started < 8
