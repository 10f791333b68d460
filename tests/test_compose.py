"""compose() writes mail that reads back as exactly what was supplied.

Every message is parsed back with the stdlib's standards parser (policy.default), and some with
the worker's own parser; the assertions are on decoded values (names, subjects, bodies,
attachment bytes and names), on the shape of the bytes (CRLF only, line lengths) and on header
injection being impossible.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from worker.core.compose import MAX_REFERENCES, OutgoingMail, compose, single_line
from worker.core.parse import parse_message

BASE = OutgoingMail(
    from_name="Claranet Soho Complaints",
    from_address="complaints@claranetsoho.co.uk",
    to=["sarah.jones@example.net"],
    subject="[CLR-2026-000123] Re: Broadband down",
    message_id="<3f2a9c0d5e8b4f6a@claranetsoho.co.uk>",
    date=datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
    text="Dear Sarah,\n\nThank you for your complaint.\n",
    html="<p>Dear Sarah,</p><p>Thank you for your complaint.</p>\n",
    in_reply_to="<cust-1@example.net>",
    references=["<cust-1@example.net>"],
    extra_headers={"Auto-Submitted": "auto-replied", "X-Complaints-Worker-Case": "CLR-2026-000123"},
)

LONG_TEXT = "word " * 400
CJK = "投诉信息：宽带连接中断了三天，请尽快处理。" * 8
EMOJI = "Angry 😡 about 📶 — " * 10
BINARY = bytes(range(256)) * 40

CASES: dict[str, dict[str, Any]] = {
    "plain ascii, text only": dict(html=None, in_reply_to=None, references=[], extra_headers={}),
    "text and html": {},
    "non-ascii names and subject": dict(
        from_name="Beschwerdestelle Müller & Söhne", subject="[CLR-2026-000123] Re: Grüße – café",
        text="Sehr geehrte Frau Jönsson,\nIhr Anschluss läuft wieder.\n",
        html="<p>Sehr geehrte Frau Jönsson, Ihr Anschluss läuft wieder.</p>"),
    "display name with specials": dict(from_name='Complaints (Soho), "Team" \\ Desk <x@y>'),
    "long ascii subject folds": dict(subject="[CLR-2026-000123] " + "very " * 60 + "long"),
    "long cjk subject folds": dict(subject=CJK, from_name=CJK[:40]),
    "emoji everywhere": dict(subject=EMOJI, from_name=EMOJI[:30], text=EMOJI, html=f"<b>{EMOJI}</b>"),
    "text like an encoded word": dict(subject="=?utf-8?q?Gotcha?= =?x", from_name="=?utf-8?q?Mallory?="),
    "empty subject and name": dict(subject="", from_name=""),
    "body edge cases": dict(
        text="no newline at the end, trailing space \n.\nFrom here\n=3D literal\n" + "x" * 2000 + "\n\t tab "
        # A space encoded at the end of a full line must not take it past 76.
        + "\n" + "x" * 74 + " \n" + "y" * 73 + "\t\t\n" + "z" * 75 + " ",
        html="<p>" + "a=b " * 500 + "</p>"),
    "CR and CRLF line ends in the body": dict(text="one\r\ntwo\rthree\nfour", html="<p>a</p>\r\n<p>b</p>"),
    "many recipients": dict(to=[f"customer.number.{n}@example.org" for n in range(12)]),
    "attachments": dict(attachments=[
        ("bill.pdf", "application/pdf", b"%PDF-1.4 fake bill"),
        ("Rechnung für März – ÄÖÜ.pdf", "application/pdf", BINARY),
        ("写真" * 60 + ".jpg", "image/jpeg", os.urandom(5000)),
        ("x" * 190 + ".txt", "text/plain", b"plain text attachment\r\nline two\n"),
        ('quote " and \\ backslash.bin', "application/octet-stream", b""),
        ("=?utf-8?q?not-decoded?=.doc", "application/msword", b"doc"),
    ]),
    "attachments without html": dict(html=None, attachments=[("a.csv", "text/csv", b"a,b\n1,2\n")]),
}


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def utf8(text: str) -> str:
    """Undo the stdlib parser's surrogate escapes of raw UTF-8 (RFC 6532) header bytes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8")


def as_sent(text: str) -> str:
    """A body as it decodes: line ends normalised and a final line end added."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def assert_well_formed(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")[:-1]
    assert not [line for line in lines if b"\r" in line or b"\n" in line], "bare CR or LF"
    assert max(len(line) for line in lines) <= 998
    head, _, _ = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        # Only an unbreakable word (here: a long address or id) may take a header past 78.
        assert len(line) <= 78 or b" " not in line.strip(), line


def assert_reads_back(mail: OutgoingMail, raw: bytes) -> EmailMessage:
    assert_well_formed(raw)
    msg = parse(raw)
    assert not msg.defects
    [sender] = msg["From"].addresses
    name = single_line(mail.from_name, 200)
    # The stdlib's phrase parser keeps the space between adjacent encoded words, which RFC 2047
    # 6.2 says to drop (EmailMessage's own long names read back the same); the worker's does.
    assert sender.display_name.replace(" ", "") == name.replace(" ", "")
    assert parse_message(raw).from_name == name
    assert utf8(sender.addr_spec) == mail.from_address
    assert [utf8(a.addr_spec) for a in msg["To"].addresses] == list(mail.to)
    assert str(msg["Subject"]) == single_line(mail.subject)
    assert msg["Date"].datetime == mail.date
    assert msg["Message-ID"] == mail.message_id
    assert msg["In-Reply-To"] == mail.in_reply_to
    assert (msg["References"] or "").split() == list(mail.references)
    for name, value in mail.extra_headers.items():
        assert str(msg[name]) == single_line(value)
    assert msg["MIME-Version"] == "1.0"

    plain = msg.get_body(("plain",))
    assert plain is not None and plain.get_content_charset() == "utf-8"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().replace("\r\n", "\n") == as_sent(mail.text)
    if mail.html is None:
        assert msg.get_body(("html",)) is None
    else:
        html = msg.get_body(("html",))
        assert html is not None
        assert html.get_content().replace("\r\n", "\n") == as_sent(mail.html)
        assert msg.get_content_type() == ("multipart/mixed" if mail.attachments else "multipart/alternative")
    for part in msg.walk():
        if not part.is_multipart():
            encoded = part.get_payload()
            assert isinstance(encoded, str)
            assert max(len(line) for line in encoded.splitlines() or [""]) <= 76

    attachments = list(msg.iter_attachments())
    assert len(attachments) == len(mail.attachments)
    for part, (filename, content_type, data) in zip(attachments, mail.attachments, strict=True):
        assert part.get_content_disposition() == "attachment"
        assert part.get_filename() == (single_line(filename, 200) or None)
        assert part.get_content_type() == content_type
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_payload(decode=True) == data
    return msg


@pytest.mark.parametrize("changes", list(CASES.values()), ids=list(CASES))
def test_composed_mail_reads_back_as_supplied(changes: dict[str, Any]) -> None:
    mail = replace(BASE, **changes)
    assert_reads_back(mail, compose(mail))


def test_a_typical_acknowledgement_looks_as_expected() -> None:
    raw = compose(replace(BASE, subject="[CLR-2026-000123] Re: Broadband down – café"))
    head = raw.partition(b"\r\n\r\n")[0].decode("ascii")
    assert head.startswith(
        "From: Claranet Soho Complaints <complaints@claranetsoho.co.uk>\r\n"
        "To: sarah.jones@example.net\r\n"
        # Only the words that need it are encoded, so the reference stays readable in the raw mail.
        "Subject: [CLR-2026-000123] Re: Broadband down =?utf-8?b?4oCTIGNhZsOp?=\r\n"
        "Date: Mon, 05 Jan 2026 09:30:00 +0000\r\n"
        "Message-ID: <3f2a9c0d5e8b4f6a@claranetsoho.co.uk>\r\n"
        "In-Reply-To: <cust-1@example.net>\r\n"
        "References: <cust-1@example.net>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "X-Complaints-Worker-Case: CLR-2026-000123\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative;\r\n boundary=\"=_")


def test_non_ascii_addresses_go_out_as_utf8_and_the_worker_reads_them() -> None:
    """An internationalised address is written as UTF-8 (RFC 6532), never as an encoded word,
    which RFC 2047 forbids in an address; the SMTP adapter sends it with SMTPUTF8."""
    mail = replace(BASE, from_name="Zoë Ñúñez", from_address="beschwerde@bücher.example",
                   to=["josé@example.net", "李@例子.中国", "plain@example.org"])
    raw = compose(mail)
    assert "To: josé@example.net, 李@例子.中国, plain@example.org\r\n".encode() in raw
    assert b"=?utf-8?" not in raw.split(b"\r\nTo:")[1].split(b"\r\n")[0]
    assert_reads_back(mail, raw)
    parsed = parse_message(raw)
    assert (parsed.from_name, parsed.from_address) == ("Zoë Ñúñez", "beschwerde@bücher.example")
    assert parsed.to == ("josé@example.net", "李@例子.中国", "plain@example.org")
    assert parsed.text.replace("\r\n", "\n").strip() == BASE.text.strip()


def test_local_part_that_is_not_a_dot_atom_is_quoted() -> None:
    mail = replace(BASE, from_address="complaints desk@example.com")
    raw = compose(mail)
    assert b'<"complaints desk"@example.com>' in raw
    assert parse(raw)["From"].addresses[0].username == "complaints desk"


def test_the_worker_reads_its_own_mail_with_attachments() -> None:
    files = CASES["attachments"]["attachments"][:4]
    mail = replace(BASE, **CASES["non-ascii names and subject"], attachments=files)
    parsed = parse_message(compose(mail))
    assert parsed.subject == mail.subject
    assert parsed.from_name == mail.from_name
    assert parsed.text.strip() == mail.text.strip()
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        (name, content_type, len(data)) for name, content_type, data in files]


INJECTIONS = ["x\r\nBcc: victim@example.org", "x\nBcc: victim@example.org", "x\rBcc: victim@example.org",
              "x\r\n\r\nBcc: victim@example.org", "x\u2028Bcc: victim@example.org",
              "x\x85Bcc: victim@example.org", "x\x00\x0b\x0c\x1cBcc: victim@example.org"]


@pytest.mark.parametrize("payload", INJECTIONS, ids=range(len(INJECTIONS)))
def test_no_supplied_value_can_start_a_header(payload: str) -> None:
    mail = replace(
        BASE, from_name=payload, subject=payload, in_reply_to="<a@b>" + payload,
        message_id="<m@b>" + payload, references=["<r@b>" + payload],
        extra_headers={"X-Complaints-Worker-Case": payload},
        attachments=[(payload + ".pdf", "application/pdf\r\nBcc: victim@example.org", b"data")],
    )
    raw = compose(mail)
    assert_well_formed(raw)
    msg = parse(raw)
    assert "Bcc" not in msg
    assert sorted(msg.keys()) == sorted(
        ["From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
         "X-Complaints-Worker-Case", "MIME-Version", "Content-Type"])
    assert str(msg["Subject"]) == single_line(payload) == "x Bcc: victim@example.org"
    assert msg["From"].addresses[0].display_name == "x Bcc: victim@example.org"
    [attachment] = msg.iter_attachments()
    assert sorted(attachment.keys()) == ["Content-Disposition", "Content-Transfer-Encoding", "Content-Type"]
    # A content type that is not type/subtype is not trusted.
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_filename() == "x Bcc: victim@example.org.pdf"
    assert attachment.get_payload(decode=True) == b"data"


@pytest.mark.parametrize("name", ["X-Bad\r\nBcc", "X-Bad: x", "", "X Bad", "X-Bäd"])
def test_extra_header_names_must_be_field_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a header name"):
        compose(replace(BASE, extra_headers={name: "v"}))


@pytest.mark.parametrize(("content_type", "sent_as"), [
    ("application/pdf", "application/pdf"),
    ("Image/PNG", "image/png"),
    ("text/plain; charset=utf-8", "text/plain"),
    ("multipart/mixed", "application/octet-stream"),
    ("message/rfc822", "application/octet-stream"),
    ("pdf", "application/octet-stream"),
    ("", "application/octet-stream"),
    ("text/plain bad", "application/octet-stream"),
])
def test_attachment_content_types(content_type: str, sent_as: str) -> None:
    raw = compose(replace(BASE, attachments=[("f", content_type, b"x")]))
    [part] = parse(raw).iter_attachments()
    assert part.get_content_type() == sent_as
    assert part.get_payload(decode=True) == b"x"


def test_references_keep_the_root_and_the_latest() -> None:
    ids = [f"<m{n}@example.org>" for n in range(40)]
    mail = replace(BASE, references=[*ids, ids[5], ids[39]])
    sent = parse(compose(mail))["References"].split()
    assert sent == [ids[0], *ids[-(MAX_REFERENCES - 1):]]
    assert len(sent) == MAX_REFERENCES


def test_date_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        compose(replace(BASE, date=datetime(2026, 1, 5, 9, 30)))
    raw = compose(replace(BASE, date=datetime(2026, 7, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))))
    assert b"\r\nDate: Wed, 01 Jul 2026 10:00:00 +0100\r\n" in raw


def test_boundaries_differ_and_cannot_occur_in_encoded_content() -> None:
    mail = replace(BASE, text="--=_ not a boundary\n", attachments=[("a", "text/plain", b"--=_x")])
    raw = compose(mail)
    boundaries = re.findall(rb'boundary="([^"]+)"', raw)
    assert len(set(boundaries)) == 2
    assert all(b.startswith(b"=_") for b in boundaries)
    assert_reads_back(mail, raw)


# Arbitrary text, including control characters, Unicode line separators and astral characters.
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=150, deadline=None)
@given(name=any_text, subject=any_text, text=any_text, html=any_text, filename=any_text,
       header=any_text, data=st.binary(max_size=300))
def test_any_input_reads_back(name: str, subject: str, text: str, html: str, filename: str,
                              header: str, data: bytes) -> None:
    # The stdlib's reader strips "<" and ">" around a whole filename, however it is sent.
    assume(not re.fullmatch(r"<.*>", single_line(filename, 200)))
    mail = replace(BASE, from_name=name, subject=subject, text=text, html=html,
                   extra_headers={"X-Complaints-Worker-Purpose": header},
                   attachments=[(filename, "application/octet-stream", data)])
    assert_reads_back(mail, compose(mail))
