"""parse_message: raw bytes to ParsedMessage, for every input, without raising."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from worker.core.attachments import extract_attachments, select_attachments
from worker.core.message import ParsedMessage
from worker.core.parse import (
    _PLAIN_ADDRESS,
    MAX_TEXT_CHARS,
    _parse_addresses,
    _parsed_addresses,
    decode_words,
    parse_message,
)


def plain(body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8",
          extra: bytes = b"", cte: bytes = b"8bit") -> bytes:
    """A minimal single-part message around `body`."""
    return (
        b"From: Jo Bloggs <jo@example.com>\r\n"
        b"To: complaints@provider.example\r\n"
        b"Subject: test\r\n"
        b"Message-ID: <m1@example.com>\r\n"
        + extra
        + b"MIME-Version: 1.0\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Transfer-Encoding: " + cte + b"\r\n"
        b"\r\n" + body
    )


# ----------------------------------------------------------------------------- charsets


@pytest.mark.parametrize(
    ("charset", "text", "codec"),
    [
        # cp949-only syllable: a strict euc-kr decoder (Python's ks_c_5601 alias) fails on it.
        pytest.param("ks_c_5601-1987", "똠방각하, 요금 문의드립니다", "cp949", id="ks_c_5601-1987"),
        pytest.param("windows-1252", "Bill €42 – “wrong”", "cp1252", id="windows-1252"),
        pytest.param("iso-8859-1", "Café 5€", "cp1252", id="latin1-means-cp1252"),
        pytest.param("ISO-2022-JP", "請求書が間違っています", "iso2022_jp", id="iso-2022-jp"),
        pytest.param("utf-7", "Grüße, Rechnung €", "utf-7", id="utf-7"),
        pytest.param("gb18030", "投诉：网络中断三天", "gb18030", id="gb18030"),
        pytest.param("gb2312", "投诉网络", "gb18030", id="gb2312-as-gb18030"),
        pytest.param("shift_jis", "①番の請求", "cp932", id="shift_jis-as-cp932"),
        pytest.param("windows-1251", "Жалоба на счёт", "cp1251", id="windows-1251"),
    ],
)
def test_body_charsets(charset: str, text: str, codec: str) -> None:
    raw = plain(text.encode(codec), content_type=f"text/plain; charset={charset}".encode())
    msg = parse_message(raw)
    assert msg.problem is None
    assert msg.text == text


# Each label as mailers write it, and text only that charset encodes this way.
LEGACY_CHARSETS = [
    ("windows-1250", "Reklamacja: zażółć gęślą jaźń"),
    ("windows-1251", "Жалоба на счёт"),
    ("windows-1252", "Bill €42 – “wrong”"),
    ("windows-1253", "Καλημέρα, λογαριασμός"),
    ("windows-1254", "İstanbul şikâyet"),
    ("windows-1255", "שלום, חשבון"),
    ("windows-1256", "مرحبا، فاتورة"),
    ("windows-1257", "Sąskaita: ąčęėįšųūž"),
    ("windows-1258", "Đơn giá sai"),
    ("big5", "投訴網絡中斷"),
    ("euc-kr", "요금 문의"),
    ("euc-jp", "請求書が間違っています"),
    ("koi8-r", "Жалоба на счёт"),
    ("koi8-u", "Скарга: ґанок"),
    ("iso-8859-2", "Zażółć gęślą"),
    ("iso-8859-3", "Ħamrun"),
    ("iso-8859-4", "Ąčęėįšųūž"),
    ("iso-8859-5", "Жалоба"),
    ("iso-8859-6", "مرحبا"),
    ("iso-8859-7", "Καλημέρα"),
    ("iso-8859-8", "שלום"),
    ("iso-8859-9", "şikâyet"),
    ("iso-8859-10", "Ŋŧ"),
    ("iso-8859-11", "สวัสดี"),
    ("iso-8859-13", "Ąčęėį"),
    ("iso-8859-14", "Ŵŷ Ẁẁ"),
    ("iso-8859-15", "Facture € œ"),
    ("iso-8859-16", "Șțară €"),
    ("tis-620", "สวัสดี"),
    ("cp866", "Жалоба"),
]


@pytest.mark.parametrize(("charset", "text"), LEGACY_CHARSETS, ids=[c for c, _ in LEGACY_CHARSETS])
def test_legacy_charsets(charset: str, text: str) -> None:
    msg = parse_message(plain(text.encode(charset), content_type=f"text/plain; charset={charset}".encode()))
    assert msg.text == text
    assert "UnknownCharset" not in msg.defects


@pytest.mark.parametrize(
    ("label", "defect"),
    [
        pytest.param("unknown-8bit", False, id="unknown-8bit-is-no-claim"),
        pytest.param("x-unknown", False, id="x-unknown"),
        pytest.param("bogus-charset-9", True, id="bogus-name"),
        pytest.param("base64", True, id="codec-that-is-not-a-charset"),
    ],
)
def test_unknown_charset_labels_fall_back(label: str, defect: bool) -> None:
    for text, codec in (("Grüße £10", "utf-8"), ("Grüße £10", "cp1252")):
        msg = parse_message(plain(text.encode(codec), content_type=f"text/plain; charset={label}".encode()))
        assert msg.text == text
        assert ("UnknownCharset" in msg.defects) is defect


def test_no_charset_and_eight_bit_bytes_without_mime_headers() -> None:
    raw = b"From: jo@example.com\r\nSubject: s\r\n\r\nCaf\xe9 \xa310\r\n"
    assert parse_message(raw).text.strip() == "Café £10"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        pytest.param(b"text/plain", "Grüße".encode(), "Grüße", id="missing-charset-utf8"),
        pytest.param(b"text/plain", "Grüße".encode("cp1252"), "Grüße", id="missing-charset-cp1252"),
        pytest.param(b"text/plain; charset=us-ascii", "naïve".encode(), "naïve",
                     id="ascii-label-utf8-bytes"),
        pytest.param(b"text/plain; charset=x-no-such-charset", "£10".encode(), "£10",
                     id="unknown-charset-utf8"),
        pytest.param(b"text/plain; charset=x-no-such-charset", "£10".encode("cp1252"), "£10",
                     id="unknown-charset-cp1252"),
        pytest.param(b"text/plain; charset=utf-8", b"caf\xe9", "café", id="latin1-labelled-utf8"),
        pytest.param(b"text/plain; charset=utf-8", "café".encode() + b"\xff", "café\ufffd",
                     id="utf8-with-one-bad-byte"),
        pytest.param(b"text/plain; charset=\"UTF-8\"", "ok ✓".encode(), "ok ✓", id="quoted-charset"),
        pytest.param(b"text/plain; charset=base64", b"plain", "plain", id="codec-not-a-charset"),
        pytest.param(b"text/plain; charset=utf-8", b"\x81\x8d\x8f", "\x81\x8d\x8f",
                     id="undecodable-anywhere-latin1"),
    ],
)
def test_charset_fallbacks(content_type: bytes, body: bytes, expected: str) -> None:
    assert parse_message(plain(body, content_type=content_type)).text == expected


def test_base64_and_quoted_printable_bodies() -> None:
    b64 = parse_message(plain(b"wqMxMCBjaGFyZ2U=\r\n", cte=b"base64"))
    assert b64.text == "£10 charge"
    qp = parse_message(plain(b"=C2=A310 charge, soft=\r\nbreak", cte=b"quoted-printable"))
    assert qp.text == "£10 charge, softbreak"


# ----------------------------------------------------------------------------- RFC 2047 / 2231


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("=?utf-8?q?Caf=C3=A9_bill?=", "Café bill", id="q"),
        pytest.param("=?UTF-8?B?wqMxMCBjaGFyZ2U=?=", "£10 charge", id="b"),
        pytest.param("=?utf-8?q?one?= =?utf-8?q?_two?=", "one two", id="adjacent-words-join"),
        pytest.param("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "café", id="split-multibyte"),
        pytest.param("Re: =?iso-8859-1?q?r=E9ponse?= now", "Re: réponse now", id="mixed-text"),
        pytest.param("=?utf-8?q?glued?=text", "gluedtext", id="glued-to-text"),
        pytest.param("=?utf-8*en?q?lang?=", "lang", id="rfc2231-language"),
        pytest.param("=?ks_c_5601-1987?B?sPi03A==?=", "공단", id="ks_c_5601-word"),
        pytest.param("=?x-unknown?q?caf=E9?=", "café", id="unknown-charset-word"),
        pytest.param("=?utf-8?b?w6k?=", "é", id="b-missing-padding"),
        pytest.param("=?utf-8?q?no end", "=?utf-8?q?no end", id="unterminated-kept"),
        pytest.param("=?utf-8?x?bad?=", "=?utf-8?x?bad?=", id="bad-encoding-kept"),
        pytest.param("plain text", "plain text", id="no-words"),
    ],
)
def test_decode_words(raw: str, expected: str) -> None:
    assert decode_words(raw) == expected


def test_raw_8bit_inside_encoded_word() -> None:
    # Netscape-era mailers wrote raw Latin-1 bytes inside Q words.
    raw = plain(b"x", extra=b"Subject: =?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?=\r\n")
    msg = parse_message(raw.replace(b"Subject: test\r\n", b""))
    assert msg.subject == "Die Hasen und die Frösche"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        # RFC 2047 section 6.2: white space between adjacent encoded words is not displayed,
        # whatever their charsets.
        pytest.param(b"=?Windows-1252?Q?Hans_B=C4KO?= =?iso-8859-15?q?Sch=F6nland?= <me@example.com>",
                     "Hans BÄKOSchönland", id="adjacent-words-two-charsets"),
        pytest.param(b"=?iso-8859-1?Q?B=FCrling,=20Andreas?= <me@example.com>", "Bürling, Andreas",
                     id="comma-inside-word"),
        pytest.param(b"=?UTF-8?B?0JjQstCw0L0g0J/QtdGC0YDQvtCy?= <me@example.com>", "Иван Петров",
                     id="b-encoded"),
        pytest.param(b"\"=?utf-8?q?Jo_Bl=C3=B6ggs?=\" <me@example.com>", "Jo Blöggs",
                     id="word-in-quotes"),
        pytest.param(b"me@example.com (=?iso-8859-1?q?J=F6rg?= Smith)", "Jörg Smith",
                     id="comment-is-the-name"),
        pytest.param(b"=?utf-8?q?Jo?= =?utf-8?q?_Bloggs?= <me@example.com>", "Jo Bloggs",
                     id="space-encoded-in-second-word"),
    ],
)
def test_encoded_display_names(header: bytes, name: str) -> None:
    msg = parse_message(b"From: " + header + b"\r\nSubject: s\r\n\r\nbody")
    assert msg.from_address == "me@example.com"
    assert msg.from_name == name


def test_encoded_subject_across_folded_lines() -> None:
    msg = parse_message(
        b"From: a@example.com\r\n"
        b"Subject: =?utf-8?B?QVc6IE9UUlMgLyBBbmZyYWdlIE9UUlMgRWluZsO8aHJ1bmcvUHLDpHNlbnRh?=\r\n"
        b" =?utf-8?Q?tion_[Ticket#11545]?=\r\n\r\nbody")
    assert msg.subject == "AW: OTRS / Anfrage OTRS Einführung/Präsentation [Ticket#11545]"


def test_raw_8bit_header_in_the_charset_the_message_declares() -> None:
    # Chinese mailers write raw GB2312 headers; the body says gb2312 (and here it is the
    # enclosed original that does, as in a spam filter's report).
    inner = ("Subject: 投诉\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n网络\r\n").encode("gb2312")
    raw = ("From: \"武兰成\" <wu@example.com>\r\nSubject: 转发：投诉\r\n").encode("gb2312") + (
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nSpam report\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--B--\r\n")
    msg = parse_message(raw)
    assert msg.subject == "转发：投诉"
    assert msg.from_name == "武兰成"
    assert [a.filename for a in msg.attachments] == ["投诉.eml"]


def test_raw_utf8_header_stays_utf8_whatever_the_body_charset() -> None:
    raw = plain("x".encode("gb2312"), content_type=b"text/plain; charset=gb2312")
    msg = parse_message(raw.replace(b"Subject: test", "Subject: Rückruf – 投诉".encode()))
    assert msg.subject == "Rückruf – 投诉"


def test_raw_utf8_header() -> None:
    msg = parse_message(plain(b"x").replace(b"Subject: test", "Subject: Rückruf".encode()))
    assert msg.subject == "Rückruf"
    assert ("subject", "Rückruf") in msg.headers


ATTACHMENTS = (
    b"From: jo@example.com\r\n"
    b"Subject: files\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"See attached.\r\n"
    b"--XX\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XX\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-Disposition: attachment;\r\n"
    b" filename*0*=utf-8''%E5%86%99%E7%9C%9F;\r\n"
    b" filename*1=\"-1.png\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream; name=\"=?utf-8?B?w6l0w6kudHh0?=\"\r\n"
    b"\r\n"
    b"abc\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Disposition: attachment; filename=\"..\\\\..\\\\evil.txt\"\r\n"
    b"\r\n"
    b"log\r\n"
    b"--XX--\r\n"
)


def test_attachments_with_rfc2231_and_rfc2047_names() -> None:
    msg = parse_message(ATTACHMENTS)
    assert msg.text == "See attached."
    names = [(a.filename, a.content_type, a.size) for a in msg.attachments]
    assert names == [
        ("Rechnung März.pdf", "application/pdf", 9),
        ("写真-1.png", "image/png", 8),
        ("été.txt", "application/octet-stream", 3),  # the CRLF before a boundary is not content
        ("evil.txt", "text/plain", 3),  # path components are never kept
    ]


def test_rfc2231_filenames_with_language_and_continuations() -> None:
    raw = (
        b"From: jo@example.com\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        b" filename*0*=iso-8859-1'de'Gr%FC;\r\n filename*1*=%DFe%20an;\r\n filename*2=\" Sie.pdf\"\r\n"
        b"\r\nx\r\n"
        b"--XX\r\nContent-Type: image/png; name*=utf-8'en'%E2%82%AC%20bill.png\r\n\r\nx\r\n"
        b"--XX\r\nContent-Type: text/plain;\r\n name=\"=?iso-8859-1?Q?R=E9sum=E9?= =?utf-8?B?LnR4dA==?=\"\r\n"
        b"Content-Disposition: attachment\r\n\r\nx\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=\"Rechnung M\xe4rz.pdf\"\r\n\r\nx\r\n"
        b"--XX--\r\n"
    )
    expected = ["Grüße an Sie.pdf", "€ bill.png", "Résumé.txt", "Rechnung März.pdf"]
    assert [a.filename for a in parse_message(raw).attachments] == expected
    # Staff receive the files under the same names.
    assert [f.filename for f in extract_attachments(raw)] == expected


UNNAMED = (
    b"From: jo@example.com\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n"
    b"--M\r\nContent-Type: multipart/related; boundary=R\r\n\r\n"
    b"--R\r\nContent-Type: text/html\r\n\r\n<p>See <img src=cid:image001.png@01D></p>\r\n"
    b"--R\r\nContent-Type: image/png\r\nContent-ID: <image001.png@01D>\r\n\r\nPNG\r\n"
    b"--R\r\nContent-Type: image/gif\r\nContent-ID: <part1.abc@example>\r\n\r\nGIF\r\n"
    b"--R\r\nContent-Type: text/html\r\n\r\n<p>a resource, not body text</p>\r\n"
    b"--R--\r\n"
    b"--M\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@example.com\r\nSubject: Your bill/June\r\n\r\nhi\r\n"
    b"--M\r\nContent-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\n\r\n"
    b"From: x@example.com\r\n\r\nno subject\r\n"
    b"--M\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
    b"--M\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
    b"--M--\r\n"
)


def test_unnamed_attachments_get_names_that_say_what_they_are() -> None:
    msg = parse_message(UNNAMED)
    assert msg.text == "See"
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("image001.png", "image/png"),  # its Content-ID is a file name
        ("image.gif", "image/gif"),
        ("document.html", "text/html"),  # a related resource is not body text
        ("Your bill-June.eml", "message/rfc822"),  # the enclosed subject, no path separator
        ("Undelivered Message.eml", "message/rfc822"),
        ("delivery-status.txt", "message/delivery-status"),
        ("file", "application/pgp-encrypted"),
    ]
    files = extract_attachments(UNNAMED)
    assert [f.filename for f in files] == [a.filename for a in msg.attachments]
    assert files[3].data.startswith(b"From: x@example.com\n") and b"Subject: Your bill/June" in files[3].data
    assert files[5].data.startswith(b"Reporting-MTA: dns; mx.example")


def test_related_start_parameter_names_the_body() -> None:
    raw = (
        b"From: jo@example.com\r\nContent-Type: multipart/related; boundary=R; start=\"<body@x>\"\r\n\r\n"
        b"--R\r\nContent-Type: text/plain\r\nContent-ID: <notes@x>\r\n\r\nresource text\r\n"
        b"--R\r\nContent-Type: text/plain\r\nContent-ID: <body@x>\r\n\r\nthe body\r\n"
        b"--R--\r\n")
    msg = parse_message(raw)
    assert msg.text == "the body"
    assert [a.content_type for a in msg.attachments] == ["text/plain"]


def test_attachments_over_the_limit_are_named_not_dropped_silently() -> None:
    def part(name: str, size: int) -> bytes:
        return (b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                b"filename=" + name.encode() + b"\r\n\r\n" + b"x" * size + b"\r\n")

    raw = (b"From: jo@example.com\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
           + part("small.txt", 1_000) + part("video.mov", 3 * 1024 * 1024) + part("bill.pdf", 2_000)
           + b"--XX--\r\n")
    selection = select_attachments(raw, limit=1024 * 1024)
    assert [f.filename for f in selection.files] == ["small.txt", "bill.pdf"]
    assert selection.left_out == (("video.mov", 3 * 1024 * 1024),)
    assert selection.warning() == ("Not attached here, as the attachments would be over 1.0 MB in all: "
                                   "video.mov (3.0 MB). The stored message keeps them.")
    assert select_attachments(raw).warning() is None


# ----------------------------------------------------------------------------- body selection

ALTERNATIVE = (
    b"From: jo@example.com\r\n"
    b"Content-Type: multipart/alternative; boundary=AA\r\n"
    b"\r\n"
    b"--AA\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Plain version\r\n"
    b"--AA\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>HTML <b>version</b></p>\r\n"
    b"--AA--\r\n"
)

HTML_ONLY = (
    b"From: jo@example.com\r\n"
    b"Content-Type: text/html; charset=windows-1252\r\n"
    b"\r\n"
    b"<html><body><p>Charged \x8010 twice</p><blockquote>old</blockquote></body></html>\r\n"
)

MIXED_HTML_THEN_TEXT = (
    b"From: jo@example.com\r\n"
    b"Content-Type: multipart/mixed; boundary=MM\r\n"
    b"\r\n"
    b"--MM\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>The message</p>\r\n"
    b"--MM\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"-- signature\r\n"
    b"--MM--\r\n"
)

RELATED_IN_ALTERNATIVE = (
    b"From: jo@example.com\r\n"
    b"Content-Type: multipart/alternative; boundary=A1\r\n"
    b"\r\n"
    b"--A1\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--A1\r\n"
    b"Content-Type: multipart/related; boundary=R1\r\n"
    b"\r\n"
    b"--R1\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>rich</p>\r\n"
    b"--R1\r\n"
    b"Content-Type: image/gif\r\n"
    b"Content-ID: <logo>\r\n"
    b"\r\n"
    b"GIF89a\r\n"
    b"--R1--\r\n"
    b"--A1--\r\n"
)


@pytest.mark.parametrize(
    ("raw", "text", "from_html", "html_contains", "attachment_types"),
    [
        pytest.param(ALTERNATIVE, "Plain version", False, "<b>version</b>", [], id="alternative"),
        pytest.param(HTML_ONLY, "Charged €10 twice\n> old", True, "Charged", [], id="html-only"),
        pytest.param(MIXED_HTML_THEN_TEXT, "The message\n-- signature", True, "The message", [],
                     id="mixed-html-and-text"),
        pytest.param(RELATED_IN_ALTERNATIVE, "plain", False, "rich", ["image/gif"],
                     id="related-inside-alternative"),
    ],
)
def test_body_selection(raw: bytes, text: str, from_html: bool, html_contains: str,
                        attachment_types: list[str]) -> None:
    msg = parse_message(raw)
    assert msg.text == text
    assert msg.text_from_html is from_html
    assert msg.html is not None and html_contains in msg.html
    assert [a.content_type for a in msg.attachments] == attachment_types


def test_text_is_capped() -> None:
    msg = parse_message(plain(b"x" * (MAX_TEXT_CHARS + 50_000)))
    assert len(msg.text) == MAX_TEXT_CHARS
    assert "TextTruncated" in msg.defects


def test_truncation_does_not_break_multibyte_text() -> None:
    body = "é".encode() * MAX_TEXT_CHARS  # 2 bytes per char: cut in the middle of the part
    msg = parse_message(plain(body))
    assert set(msg.text) == {"é"}


# ----------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(b"Message-ID: <a1@example.com>", ("<a1@example.com>",), id="plain"),
        pytest.param(b"Message-ID:   a1@example.com  ", ("<a1@example.com>",), id="bare-id"),
        pytest.param(b"Message-ID: <a1@\r\n example.com>", ("<a1@example.com>",), id="folded"),
        pytest.param(b"Message-ID: <>", (), id="empty-brackets"),
    ],
)
def test_message_id(header: bytes, expected: tuple[str, ...]) -> None:
    msg = parse_message(b"From: a@example.com\r\n" + header + b"\r\n\r\nx")
    assert msg.message_id == (expected[0] if expected else None)


@pytest.mark.parametrize(
    ("headers", "in_reply_to", "references"),
    [
        pytest.param(
            b"In-Reply-To: <p@x>\r\nReferences: <r1@x> <r2@x>\r\n\t<p@x>\r\n",
            ("<p@x>",), ("<r1@x>", "<r2@x>", "<p@x>"), id="normal",
        ),
        pytest.param(b"In-Reply-To: <p@x> (Jo's message of Monday)\r\n", ("<p@x>",), (),
                     id="comment-after-id"),
        pytest.param(b"In-Reply-To: Your message of Mon, 1 Jan, p@x\r\n", ("<p@x>",), (),
                     id="prose-with-bare-id"),
        pytest.param(b"References: r1@x\r\n", (), ("<r1@x>",), id="bare-reference"),
        pytest.param(b"References: <r1@x>,<r2@x>\r\nReferences: <r1@x>\r\n", (),
                     ("<r1@x>", "<r2@x>"), id="commas-and-duplicates"),
    ],
)
def test_threading_ids(headers: bytes, in_reply_to: tuple[str, ...],
                       references: tuple[str, ...]) -> None:
    msg = parse_message(b"From: a@example.com\r\n" + headers + b"\r\nx")
    assert msg.in_reply_to == in_reply_to
    assert msg.references == references


# ----------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("headers", "from_address", "from_name", "return_path"),
    [
        pytest.param(b"From: Jo Bloggs <Jo.Bloggs@Example.COM>", "jo.bloggs@example.com",
                     "Jo Bloggs", None, id="lower-cased"),
        pytest.param(b"From: =?utf-8?q?Bj=C3=B6rk?= <bjork@example.is>", "bjork@example.is",
                     "Björk", None, id="encoded-display-name"),
        pytest.param(b"From: =?utf-8?q?Smith=2C_Jo?= <jo@example.com>", "jo@example.com",
                     "Smith, Jo", None, id="encoded-comma-does-not-split"),
        pytest.param(b"From: \"Clement.Si\" <Claudia.Shu@yahoo.com.>", "claudia.shu@yahoo.com.",
                     "Clement.Si", None, id="dots-in-phrase"),
        # RFC 2047 forbids encoded words in an addr-spec; decoding one would allow spoofing.
        pytest.param(b"From: =?utf-8?q?ceo=40provider.example?=@evil.example",
                     "=?utf-8?q?ceo=40provider.example?=@evil.example", "", None,
                     id="no-decoding-inside-addr-spec"),
        pytest.param(b"Sender: list@example.org", "list@example.org", "", None,
                     id="sender-fallback"),
        pytest.param(b"From: a@example.com\r\nReturn-Path: <>", "a@example.com", "", "",
                     id="null-return-path"),
        pytest.param(b"From: a@example.com\r\nReturn-Path: <Bounce+X@Example.com>",
                     "a@example.com", "", "bounce+x@example.com", id="return-path"),
        pytest.param(b"From: a@example.com\r\nReturn-Path: <mailer-daemon>", "a@example.com", "",
                     "mailer-daemon", id="return-path-no-domain"),
        pytest.param(b"From: [garbage]\r\nFrom: Real <real@example.com>", "real@example.com",
                     "Real", None, id="second-from-is-real"),
        pytest.param(b"From: MAILER-DAEMON", "mailer-daemon", "", None, id="bare-local-part"),
    ],
)
def test_sender_addresses(headers: bytes, from_address: str, from_name: str,
                          return_path: str | None) -> None:
    msg = parse_message(headers + b"\r\nSubject: s\r\n\r\nbody")
    assert msg.problem is None
    assert msg.from_address == from_address
    assert msg.from_name == from_name
    assert msg.return_path == return_path


def test_recipient_lists() -> None:
    msg = parse_message(
        b"From: a@example.com\r\n"
        b"To: \"Smith, Jo\" <JO@example.com>, b@example.com,\r\n c@example.com\r\n"
        b"Cc: undisclosed-recipients:;\r\n"
        b"Cc: Team: d@example.com, e@example.com;\r\n"
        b"Reply-To: Jo <reply@example.com>\r\n"
        b"\r\nx"
    )
    assert msg.to == ("jo@example.com", "b@example.com", "c@example.com")
    assert msg.cc == ("d@example.com", "e@example.com")
    assert msg.reply_to == ("reply@example.com",)


def test_a_word_with_no_domain_is_no_recipient() -> None:
    # "To: Recipients" (a spammer's placeholder) names nobody; "From: MAILER-DAEMON" does.
    msg = parse_message(b"From: MAILER-DAEMON\r\nTo: Recipients\r\nCc: Team <team>\r\n\r\nx")
    assert msg.from_address == "mailer-daemon"
    assert msg.to == () and msg.cc == ()


# ----------------------------------------------------------------------------- other headers


def test_subject_is_one_clean_line() -> None:
    msg = parse_message(
        b"From: a@example.com\r\nSubject:  Line one\r\n\tline two\x07 =?utf-8?q?a=0Db?=  \r\n\r\nx"
    )
    assert msg.subject == "Line one\tline two  a b".replace("\t", " ")
    assert "\n" not in msg.subject and "\r" not in msg.subject


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"Tue, 3 Mar 2026 09:15:00 +0000", datetime(2026, 3, 3, 9, 15, tzinfo=UTC),
                     id="utc"),
        pytest.param(b"Tue, 3 Mar 2026 09:15:00 +0100",
                     datetime(2026, 3, 3, 9, 15, tzinfo=timezone(timedelta(hours=1))), id="offset"),
        pytest.param(b"3 Mar 2026 09:15:00 -0000", datetime(2026, 3, 3, 9, 15, tzinfo=UTC),
                     id="minus-zero-is-utc"),
        pytest.param(b"yesterday afternoon", None, id="garbage"),
        pytest.param(b"Tue, 99 Foo 2026 99:99:99 +9999", None, id="out-of-range"),
    ],
)
def test_date(value: bytes, expected: datetime | None) -> None:
    msg = parse_message(b"From: a@example.com\r\nDate: " + value + b"\r\n\r\nx")
    assert msg.date == expected
    if msg.date is not None:
        assert msg.date.tzinfo is not None


def test_headers_in_order_lower_cased_and_decoded() -> None:
    msg = parse_message(
        b"Received: from a\r\n by b; Tue, 3 Mar 2026 09:15:00 +0000\r\n"
        b"From: a@example.com\r\n"
        b"X-Custom: =?utf-8?q?caf=C3=A9?=\r\n"
        b"X-Custom: second\r\n"
        b"\r\nx"
    )
    assert msg.headers == (
        ("received", "from a by b; Tue, 3 Mar 2026 09:15:00 +0000"),
        ("from", "a@example.com"),
        ("x-custom", "café"),
        ("x-custom", "second"),
    )
    assert msg.header("X-CUSTOM") == "café"
    assert msg.header_values("x-custom") == ("café", "second")


DSN = (
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
    b"To: complaints@provider.example\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Content-Type: multipart/report; report-type=\"Delivery-Status\"; boundary=\"B\"\r\n"
    b"\r\n"
    b"--B\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"I'm sorry to have to inform you that your message could not be delivered.\r\n"
    b"--B\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user\r\n"
    b"  unknown\r\n"
    b"--B\r\n"
    b"Content-Type: text/rfc822-headers\r\n"
    b"\r\n"
    b"From: complaints@provider.example\r\n"
    b"Message-ID: <ack-1@provider.example>\r\n"
    b"X-Complaints-Worker-Purpose: acknowledgement\r\n"
    b"--B--\r\n"
)


def test_report_structure() -> None:
    msg = parse_message(DSN)
    assert msg.content_type == "multipart/report"
    assert msg.report_type == "delivery-status"
    assert msg.text.startswith("I'm sorry")
    assert ("action", "failed") in msg.report_fields
    assert ("final-recipient", "rfc822; gone@example.org") in msg.report_fields
    # Unfolding removes the line break only (RFC 5322 section 2.2.3), not the white space.
    assert ("diagnostic-code", "smtp; 550 5.1.1 user  unknown") in msg.report_fields
    assert ("message-id", "<ack-1@provider.example>") in msg.enclosed_headers
    assert [a.content_type for a in msg.attachments] == [
        "message/delivery-status", "text/rfc822-headers",
    ]


def test_enclosed_message_rfc822() -> None:
    raw = DSN.replace(b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822")
    msg = parse_message(raw)
    assert ("x-complaints-worker-purpose", "acknowledgement") in msg.enclosed_headers
    assert msg.attachments[-1].content_type == "message/rfc822"
    assert msg.attachments[-1].size > 0


# ----------------------------------------------------------------------------- problems


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param(b"", "empty message", id="empty"),
        pytest.param(b"\r\n\r\n  \r\n", "empty message", id="blank-lines"),
        pytest.param(b"Hello, this is just some text\r\nwith no headers.\r\n", "no header fields",
                     id="no-headers"),
        pytest.param(b"Subject: hi\r\nTo: a@example.com\r\n\r\nbody", "no sender address",
                     id="no-sender"),
        pytest.param(b"From: John Smith\r\nSubject: hi\r\n\r\nbody", "no sender address",
                     id="from-without-address"),
    ],
)
def test_problem_cases(raw: bytes, problem: str) -> None:
    msg = parse_message(raw)
    assert msg.problem is not None and msg.problem.startswith(problem)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"Return-Path: <>\r\nSubject: Mail delivery failed\r\n\r\nx", id="null-path"),
        pytest.param(b"From: MAILER-DAEMON <>\r\nSubject: failed\r\n\r\nx", id="null-from"),
        pytest.param(b"Reply-To: r@example.com\r\n\r\nx", id="reply-to-only"),
    ],
)
def test_automated_sender_is_not_a_problem(raw: bytes) -> None:
    assert parse_message(raw).problem is None


def test_no_headers_keeps_text() -> None:
    msg = parse_message(b"just a body line\n")
    assert msg.problem == "no header fields"
    assert msg.text == "just a body line\n"


# ----------------------------------------------------------------------------- broken input


def test_missing_boundary_salvages_text() -> None:
    msg = parse_message(
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=nothere\r\n\r\n"
        b"The customer's words\r\n"
    )
    assert msg.problem is None
    assert "The customer's words" in msg.text
    assert "StartBoundaryNotFound" in msg.defects


def test_unindented_continuation_line_is_repaired() -> None:
    msg = parse_message(
        b"Return-Path: <jo@example.com>\r\n"
        b"X-Tracker: AAAABBBB\r\n"
        b"CCCCDDDD\r\n"
        b"From: Jo <jo@example.com>\r\n"
        b"Subject: still found\r\n"
        b"\r\n"
        b"body\r\n"
    )
    assert msg.subject == "still found"
    assert msg.from_address == "jo@example.com"
    assert msg.text == "body\n"
    assert "RepairedHeaderBlock" in msg.defects


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"From: a@example.com\rSubject: cr\r\rbody\rline\r", id="cr-only"),
        pytest.param(b"From: a@example.com\r\nSubject: cr\r\n\r\nbody\r\nline\r\n", id="crlf"),
        pytest.param(b"From a@example.com Mon Jan  1 00:00:00 2026\nFrom: a@example.com\n"
                     b"Subject: cr\n\nbody\nline\n", id="mbox-from-line"),
        pytest.param(b"\r\n\r\nFrom: a@example.com\r\nSubject: cr\r\n\r\nbody\r\nline\r\n",
                     id="leading-blank-lines"),
    ],
)
def test_line_endings(raw: bytes) -> None:
    msg = parse_message(raw)
    assert msg.subject == "cr"
    assert msg.text == "body\nline\n"


def test_nul_bytes_removed() -> None:
    msg = parse_message(b"From: a@example.com\r\nSubject: a\x00b\r\n\r\nx\x00y")
    assert msg.subject == "a b"  # a control character in a header becomes a space
    assert msg.text == "xy"


def test_deep_nesting_does_not_raise() -> None:
    raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(3_000)
    )
    msg = parse_message(raw)
    assert msg.from_address == "a@example.com"
    assert msg.problem is None


def test_semicolon_flood_in_content_type_is_cheap() -> None:
    # The stdlib parameter splitter is quadratic here; ours must not be (no timing asserted,
    # but the quadratic version takes minutes at this size).
    raw = plain(b"x", content_type=b'multipart/mixed; boundary="' + b";" * 300_000 + b'"')
    assert parse_message(raw).from_address == "jo@example.com"


@pytest.mark.parametrize("seed", range(5))
def test_never_raises_on_random_or_mutated_bytes(seed: int) -> None:
    rng = random.Random(seed)
    samples = [ATTACHMENTS, DSN, ALTERNATIVE, HTML_ONLY, RELATED_IN_ALTERNATIVE]
    for _ in range(60):
        base = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 40)):
            position = rng.randrange(len(base))
            base[position] = rng.randrange(256)
        for raw in (bytes(base), bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))):
            assert isinstance(parse_message(raw), ParsedMessage)


def test_accepts_bytes_like_input() -> None:
    raw = b"From: a@example.com\r\n\r\nx"
    assert parse_message(bytearray(raw)).from_address == "a@example.com"  # type: ignore[arg-type]
    assert parse_message(memoryview(raw)).from_address == "a@example.com"  # type: ignore[arg-type]


def test_bare_cr_line_ends_decode_quoted_printable_soft_breaks() -> None:
    """Old Mac mail ends lines with CR alone; a soft break must still join the two halves."""
    raw = (b"From: a@example.org\rTo: b@example.org\rSubject: x\rMIME-Version: 1.0\r"
           b"Content-Type: text/plain; charset=us-ascii\rContent-Transfer-Encoding: quoted-printable\r"
           b"\rThe mailbox is full and the mess=\rage was returned.\rSecond line.\r")
    msg = parse_message(raw)
    assert "the message was returned." in msg.text
    assert "Second line." in msg.text


# Plain address fields, as the direct reading takes them, and near misses it must leave alone.
_ATEXT = "abcXYZ019!#$%&'*+/^_`{|}~-"
_atoms = st.text(_ATEXT, min_size=1, max_size=6)
_labels = st.text("abcXYZ019", min_size=1, max_size=5)
_specs = st.builds(lambda local, domain, tld: f"{'.'.join(local)}@{'.'.join(domain)}.{tld}",
                   st.lists(_atoms, min_size=1, max_size=3), st.lists(_labels, min_size=1,
                                                                      max_size=2), _labels)
_plain_fields = st.one_of(
    st.builds(lambda name, spec, gap, pad: f"{pad}{' '.join(name)}{gap}<{spec}>{pad}",
              st.lists(_atoms, min_size=1, max_size=3), _specs, st.sampled_from(["", " "]),
              st.sampled_from(["", " "])),
    st.builds(lambda spec, pad: f"{pad}{spec}{pad}", _specs, st.sampled_from(["", " "])),
)
# Near misses: quotes, comments, two spaces, encoded words, dots in names, groups, lists.
_near_misses = st.builds(
    lambda name, spec, trick: trick.format(name=" ".join(name), spec=spec),
    st.lists(_atoms, min_size=1, max_size=3), _specs, st.sampled_from([
        '"{name}" <{spec}>', "{spec} ({name})", "{name}  <{spec}>", "{name}. <{spec}>",
        "=?utf-8?q?{name}?= <{spec}>", "{name}: <{spec}>;", "{spec}, {spec}", "<{spec}>",
        "{name} <{spec}"]))


@given(field=_plain_fields)
@example(field="O'Brien <o.brien@Example.CO.uk>")
@example(field="Jane.Smith@example.org")
@settings(max_examples=300, deadline=None)
def test_plain_address_fields_read_directly_as_both_parsers_read_them(field: str) -> None:
    """`Name <addr>` in atoms is read directly, giving what the two email parsers give."""
    assert _PLAIN_ADDRESS.fullmatch(field)
    parsed: list[str] = []
    assert _parse_addresses(field, []) == _parsed_addresses(field, parsed, sender=False)
    assert parsed == [], "the parsers found a defect in a field read as plain"


@given(field=_near_misses)
@settings(max_examples=300, deadline=None)
def test_address_fields_that_are_not_plain_get_both_parsers(field: str) -> None:
    direct: list[str] = []
    parsed: list[str] = []
    assert _parse_addresses(field, direct) == _parsed_addresses(field, parsed, sender=False)
    assert direct == parsed
